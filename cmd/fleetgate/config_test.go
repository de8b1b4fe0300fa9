package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestLoadConfig(t *testing.T) {
	tok := writeFile(t, "tok", "secret")
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"valid", "clusters:\n  - name: eu-1\n    region: eu\n    credentials: {bearer_token_file: " + tok + "}\nstorage: {retention: 30d, out_of_order_window: 10m}\n", ""},
		{"empty file", "", ""},
		{"unknown field", "clustrs: []\n", "field clustrs not found"},
		{"bad duration", "storage: {retention: forever}\n", "forever"},
		{"negative limit", "ingest: {max_series_per_request: -1}\n", "ingest.max_series_per_request"},
		{"bad cluster", "clusters:\n  - name: eu-1\n", "fleet.clusters[0] (eu-1).credentials"},
		{"bad policy", "identity: {on_conflict: maybe}\n", "fleet.on_conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(writeFile(t, "fleetgate.yml", tc.yaml))
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestCheckConfigCommand(t *testing.T) {
	good := writeFile(t, "good.yml", "clusters:\n  - name: a\n    credentials: {bearer_token_env: FG_CHECK_TOKEN}\n")
	t.Setenv("FG_CHECK_TOKEN", "x")
	require.Equal(t, 0, checkCommand([]string{"config", good}))
	// A missing secret is caught by check too.
	bad := writeFile(t, "bad.yml", "clusters:\n  - name: a\n    credentials: {bearer_token_env: FG_CHECK_UNSET}\n")
	require.Equal(t, 1, checkCommand([]string{"config", bad}))
	require.Equal(t, 2, checkCommand([]string{"nonsense"}))
}

func TestFlagsOverrideConfig(t *testing.T) {
	f, err := parseFlags([]string{"--storage.retention=2d", "--query.timeout=30s", "--storage.path=" + t.TempDir()})
	require.NoError(t, err)
	cfg := &Config{}
	require.NoError(t, applyFlags(cfg, f))
	require.Equal(t, "2d", cfg.Storage.Retention.String())
	require.Equal(t, "30s", cfg.Query.Timeout.String())
	f, err = parseFlags([]string{"--storage.retention=soon"})
	require.NoError(t, err)
	require.ErrorContains(t, applyFlags(&Config{}, f), "--storage.retention")
}

func TestExampleConfigIsValid(t *testing.T) {
	t.Setenv("FLEETGATE_TOKEN_EU_1", "a")
	t.Setenv("FLEETGATE_TOKEN_EU_2", "b")
	t.Setenv("FLEETGATE_ADMIN_TOKEN", "c")
	t.Setenv("FLEETGATE_GRAFANA_TOKEN", "d")
	t.Setenv("FLEETGATE_EU_TEAM_TOKEN", "e")
	t.Setenv("FLEETGATE_EU_TEAM_TOKEN", "a")
	require.Equal(t, 1, checkCommand([]string{"config", "../../deploy/examples/fleetgate.yml"}), "a reader token equal to a cluster's is refused")
	t.Setenv("FLEETGATE_EU_TEAM_TOKEN", "e")
	require.Equal(t, 0, checkCommand([]string{"config", "../../deploy/examples/fleetgate.yml"}))
}
