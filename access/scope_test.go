package access

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// TestScopeResourceFilter: a limited scope sees the OTLP resources of its
// clusters only, never one without a cluster; All filters nothing.
func TestScopeResourceFilter(t *testing.T) {
	require.Nil(t, All().ResourceFilter())
	res := func(cluster string) pcommon.Map {
		m := pcommon.NewMap()
		m.PutStr("service.name", "svc")
		if cluster != "" {
			m.PutStr(ClusterLabel, cluster)
		}
		return m
	}
	f := Clusters("eu-1", "eu.2").ResourceFilter()
	for cluster, want := range map[string]bool{"eu-1": true, "eu.2": true, "euX2": false, "us-1": false, "": false} {
		require.Equal(t, want, f(res(cluster)), cluster)
	}
	none := Scope{}.ResourceFilter()
	require.False(t, none(res("eu-1")))
	require.False(t, none(res("")))
}
