package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFederationConfigErrors: a bad federation setting names its field.
func TestFederationConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"query type", `
clusters:
  - name: eu-1
    query: {type: graphite, url: http://x}`, "clusters[0].query.type"},
		{"query url", `
clusters:
  - name: eu-1
    query: {url: "not a url"}`, "clusters[0].query.url"},
		{"query timeout", `
clusters:
  - name: eu-1
    query: {url: http://x, timeout: -1s}`, `clusters[0].query: not a valid duration string: "-1s"`},
		{"query tls", `
clusters:
  - name: eu-1
    query: {url: http://x, tls: {cert_file: a}}`, "clusters[0].query.tls"},
		{"ha replica label", `
ha: {enabled: true, replica_labels: [""]}`, "ha.replica_labels"},
		{"ha timeout", `
ha: {failover_timeout: -5s}`, "parsing config"},
		{"forward url", `
forward: {destinations: [{name: vm, url: "ftp://vm"}]}`, "forward.destinations[0] (vm).url"},
		{"forward name", `
forward: {destinations: [{url: "http://vm"}]}`, "forward.destinations[0].name"},
		{"forward query", `
forward: {query: {type: prometheus}}`, "forward.query.url"},
		{"cache size", `
query: {results_cache: {max_size_bytes: 1000}}`, "query.results_cache.max_size_bytes"},
		{"unknown field", `
forward: {destinatons: []}`, "destinatons"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "fleetgate.yml")
			require.NoError(t, os.WriteFile(p, []byte(tc.yaml), 0o644))
			_, err := loadConfig(p)
			require.ErrorContains(t, err, tc.want)
		})
	}
	t.Run("a query-only cluster needs no ingest credentials", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "fleetgate.yml")
		require.NoError(t, os.WriteFile(p, []byte(`
clusters:
  - name: eu-1
    query: {url: http://prom:9090/api/v1/read, required: true, headers: {X-Scope-OrgID: eu}}
ha: {enabled: true, failover_timeout: 10s}
forward: {destinations: [{name: vm, url: "http://vm:8428/api/v1/write"}]}
`), 0o644))
		_, err := loadConfig(p)
		require.NoError(t, err)
	})
}
