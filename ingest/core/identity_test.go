package core

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
)

// The stamp is merged in order and replaces a sent value; a claim of another
// cluster is refused only under on_conflict: reject.
func TestStampAndConflict(t *testing.T) {
	sb := labels.NewScratchBuilder(4)
	got := Stamp(&sb, labels.FromStrings("__name__", "up", "cluster", "mars", "zone", "a"), [][2]string{{"cluster", "eu-1"}, {"region", "eu"}})
	require.Equal(t, labels.FromStrings("__name__", "up", "cluster", "eu-1", "region", "eu", "zone", "a"), got)

	for _, policy := range []fleet.ConflictPolicy{fleet.ConflictReject, fleet.ConflictOverwrite} {
		reg, err := fleet.NewRegistry(fleet.Config{OnConflict: policy, Clusters: []fleet.ClusterConfig{{Name: "eu-1", Credentials: fleet.Credentials{TLSNames: []string{"eu-1"}}}}})
		require.NoError(t, err)
		eu := reg.Get("eu-1")
		require.False(t, Refused(reg, eu, ""))
		require.False(t, Refused(reg, eu, "eu-1"))
		require.Equal(t, policy == fleet.ConflictReject, Refused(reg, eu, "mars"))
		ow, perr := CheckIdentityValue(reg, eu, "cluster", "mars", func() string { return "span x has attribute" })
		if policy == fleet.ConflictReject {
			require.Equal(t, 400, perr.Status)
			require.Equal(t, `span x has attribute cluster="mars", another cluster than the credential proves ("eu-1")`, perr.Msg)
		} else {
			require.Nil(t, perr)
			require.True(t, ow)
		}
		c, perr := Resolve(reg, nil, "")
		require.Nil(t, c)
		require.Equal(t, 401, perr.Status, "no dev mode: no identity without a credential")
	}
}
