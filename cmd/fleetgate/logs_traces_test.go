package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLogsTracesConfigValidateNamesField(t *testing.T) {
	for yml, want := range map[string]string{
		"forward_logs:\n  - {name: loki, url: 'ftp://x'}\n":                                 "forward_logs[0] (loki).url",
		"forward_traces:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}\n": "forward_traces[1].name: duplicate",
		"forward_logs:\n  - {name: l, url: 'http://x', headers: {Authorization: x}}\n":      `forward_logs[0] (l).headers: setting header "Authorization" is not allowed`,
		"otlp:\n  translation_strategy: Nope\n":                                             "otlp.translation_strategy",
		"loki_push:\n  max_request_bytes: -1\n":                                             "loki_push.max_request_bytes",
		"logs_traces:\n  span_metrics_max_series: -5\n":                                     "logs_traces.span_metrics_max_series",
		"logs_storage:\n  max_bytes: -1\n":                                                  "logs_storage.max_bytes",
		"traces_storage:\n  max_traces: -1\n":                                               "traces_storage.max_traces",
	} {
		p := filepath.Join(t.TempDir(), "fleetgate.yml")
		require.NoError(t, os.WriteFile(p, []byte(yml), 0o644))
		_, err := loadConfig(p)
		require.ErrorContains(t, err, want, yml)
	}
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
