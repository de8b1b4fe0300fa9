package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The logs and traces sections load; their errors are in
// TestConfigSectionErrorsNameTheYAMLPath.
func TestLogsTracesConfigLoads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ok.yml")
	require.NoError(t, os.WriteFile(p, []byte(`
otlp: {promote_resource_attributes: [k8s.namespace.name]}
logs_traces: {derived_metrics_interval: 5s}
limits: {logs_rate_bytes: 1000000}
logs_storage: {max_bytes: 1000000, retention: 1d}
traces_storage: {disabled: true}
forward_logs: [{name: loki, url: 'http://loki:3100/loki/api/v1/push', headers: {X-Scope-OrgID: fleet}}]
forward_traces: [{name: tempo, url: 'http://tempo:4318/v1/traces'}]
`), 0o644))
	cfg, err := loadConfig(p)
	require.NoError(t, err)
	require.True(t, cfg.TracesStorage.Disabled)
	require.Len(t, cfg.ForwardLogs, 1)
}
