package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/store/metrics"
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
		{"bad cluster", "clusters:\n  - name: eu-1\n", "clusters[0].credentials: a cluster needs bearer_token_file, bearer_token_env or tls_names (or a query endpoint) (cluster eu-1)"},
		{"bad policy", "identity: {on_conflict: maybe}\n", "identity.on_conflict"},
		{"negative limit", "limits: {max_series: -1}\n", "limits.max_series: must be 0 (unlimited) or positive, got -1"},
		{"unknown limit", "limits: {max_serie: 1}\n", "field max_serie not found"},
		{"burst without rate", "limits: {ingestion_burst: 10}\n", "limits.ingestion_burst: set without ingestion_rate"},
		{"cluster limit", "clusters:\n  - name: eu-1\n    credentials: {bearer_token_file: " + tok + "}\n  - name: us-1\n    credentials: {bearer_token_file: " + tok + "2}\n    limits: {ingestion_rate: -5}\n",
			"clusters[1].limits.ingestion_rate: must be 0 (unlimited) or positive, got -5 (cluster us-1)"},
		{"unknown cluster limit", "clusters:\n  - name: eu-1\n    credentials: {bearer_token_file: " + tok + "}\n    limits: {series: 5}\n", "field series not found"},
		{"moved label limit", "ingest: {max_labels_per_series: 30}\n", "ingest.max_labels_per_series: moved to limits.max_labels_per_series"},
		{"moved value limit", "ingest: {max_label_value_length: 30}\n", "ingest.max_label_value_length: moved to limits.max_label_value_length"},
		{"moved log rate", "logs_traces: {logs_rate_bytes: 30}\n", "logs_traces.logs_rate_bytes: moved to limits.logs_rate_bytes"},
		{"bad max_future", "ingest: {max_future: soon}\n", "soon"},
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

// Per-cluster limits override the limits: section key by key; keys left
// out keep the section's value, and a section left out keeps the defaults.
func TestLimitsConfigMerge(t *testing.T) {
	tok := writeFile(t, "tok", "secret")
	tok2 := writeFile(t, "tok2", "secret2")
	cfg, err := loadConfig(writeFile(t, "fleetgate.yml", `
limits: {max_series: 1000, ingestion_rate: 50, max_labels_per_series: 40}
clusters:
  - name: eu-1
    credentials: {bearer_token_file: `+tok+`}
    limits: {max_series: 50000, ingestion_rate: 100000}
  - name: us-1
    credentials: {bearer_token_file: `+tok2+`}
`))
	require.NoError(t, err)
	reg, err := fleet.NewRegistry(cfg.fleet())
	require.NoError(t, err)
	eu := reg.Get("eu-1").Limits()
	require.Equal(t, 50000, eu.MaxSeries)
	require.Equal(t, 100000.0, eu.IngestionRate)
	require.Equal(t, 200000, eu.IngestionBurst, "the default burst follows the cluster's own rate")
	require.Equal(t, 40, eu.MaxLabelsPerSeries, "a key the cluster leaves out keeps the limits: value")
	require.Equal(t, 4096, eu.MaxLabelValueLength, "a key limits: leaves out keeps the default")
	us := reg.Get("us-1").Limits()
	require.Equal(t, 1000, us.MaxSeries)
	require.Equal(t, 100, us.IngestionBurst)
	require.Equal(t, 128, us.MaxOTLPAttributes)

	// No config file: the defaults.
	cfg, err = loadConfig("")
	require.NoError(t, err)
	require.Equal(t, fleet.DefaultLimits(), cfg.Limits)
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

// TestMaxExemplarsZeroDisables: storage.max_exemplars: 0 disables exemplars
// as documented (applyFlags used to turn 0 back into the default); a file
// without the key keeps the default.
func TestMaxExemplarsZeroDisables(t *testing.T) {
	f, err := parseFlags([]string{"--storage.path=" + t.TempDir()})
	require.NoError(t, err)
	for _, tc := range []struct {
		file string
		want int64
	}{
		{"storage: {max_exemplars: 0}\n", 0},
		{"storage: {retention: 2d}\n", metrics.DefaultConfig().MaxExemplars},
	} {
		cfg, err := loadConfig(writeFile(t, "c.yml", tc.file))
		require.NoError(t, err)
		require.NoError(t, applyFlags(cfg, f))
		require.Equal(t, tc.want, cfg.Storage.MaxExemplars, tc.file)
	}
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

// yamlKeys are the YAML keys of struct type t, in field order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if k, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	return keys
}

// TestConfigErrorsNameTheYAMLPath loads a bad value for every key of the
// limits:, clusters[i].limits, ingest: and logs_traces: sections (the keys
// are read from the structs' yaml tags, so a new key needs a case here) and
// checks the error names the key by its exact path in the file.
func TestConfigErrorsNameTheYAMLPath(t *testing.T) {
	tok := writeFile(t, "tok", "secret")
	tok2 := writeFile(t, "tok2", "secret2")
	clusters := func(limits string) string {
		return "clusters:\n  - name: eu-1\n    credentials: {bearer_token_file: " + tok + "}\n  - name: us-1\n    credentials: {bearer_token_file: " + tok2 + "}\n    limits: {" + limits + "}\n"
	}
	type bad struct{ value, want string }
	// A negative value, except where a key's other check is shown.
	limitCases := map[string]bad{
		"ingestion_burst":  {"5", "ingestion_burst: set without ingestion_rate"},
		"logs_burst_bytes": {"5", "logs_burst_bytes: set without logs_rate_bytes"},
	}
	// A duration does not parse when negative; one that does not parse is
	// named by loadConfig with its line (yaml.v3 gives neither for the
	// error of a type's own UnmarshalYAML).
	sections := []struct {
		section string
		typ     reflect.Type
		cases   map[string]bad
	}{
		{"ingest", reflect.TypeFor[pipeline.Config](), map[string]bad{
			"max_series_per_request": {"-1", "ingest.max_series_per_request: must not be negative, got -1"},
			"max_future":             {"5x", `ingest.max_future (line 1): unknown unit "x" in duration "5x"`},
			"series_cache_bytes":     {"-1", "ingest.series_cache_bytes: must not be negative, got -1"},
			"max_labels_per_series":  {"30", "ingest.max_labels_per_series: moved to limits.max_labels_per_series"},
			"max_label_name_length":  {"30", "ingest.max_label_name_length: moved to limits.max_label_name_length"},
			"max_label_value_length": {"30", "ingest.max_label_value_length: moved to limits.max_label_value_length"},
		}},
		{"logs_traces", reflect.TypeFor[logtrace.Config](), map[string]bad{
			"max_line_bytes":           {"-1", "logs_traces.max_line_bytes: must not be negative, got -1"},
			"max_streams_per_request":  {"-1", "logs_traces.max_streams_per_request: must not be negative, got -1"},
			"derived_metrics_interval": {"-5m", `logs_traces.derived_metrics_interval (line 1): not a valid duration string: "-5m"`},
			"span_metrics_max_series":  {"-1", "logs_traces.span_metrics_max_series: must not be negative, got -1"},
			"log_metrics_max_series":   {"-1", "logs_traces.log_metrics_max_series: must not be negative, got -1"},
			"span_duration_buckets":    {"[1, 0.5]", "logs_traces.span_duration_buckets: must be strictly increasing"},
			"logs_rate_bytes":          {"30", "logs_traces.logs_rate_bytes: moved to limits.logs_rate_bytes"},
			"logs_burst_bytes":         {"30", "logs_traces.logs_burst_bytes: moved to limits.logs_burst_bytes"},
		}},
	}
	check := func(t *testing.T, yml, want string) {
		t.Helper()
		_, err := loadConfig(writeFile(t, "fleetgate.yml", yml))
		require.Error(t, err)
		// The message starts with the path: "config <file>: <path>: ...".
		_, msg, _ := strings.Cut(err.Error(), ".yml: ")
		require.True(t, strings.HasPrefix(msg, want), "%q does not start with %q", msg, want)
	}
	for _, key := range yamlKeys(reflect.TypeFor[fleet.Limits]()) {
		c, ok := limitCases[key]
		if !ok {
			c = bad{"-1", key + ": must be 0 (unlimited) or positive, got -1"}
		}
		t.Run("limits."+key, func(t *testing.T) {
			check(t, "limits: {"+key+": "+c.value+"}\n", "limits."+c.want)
		})
		t.Run("clusters[1].limits."+key, func(t *testing.T) {
			check(t, clusters(key+": "+c.value), "clusters[1].limits."+c.want)
		})
	}
	for _, s := range sections {
		for _, key := range yamlKeys(s.typ) {
			c, ok := s.cases[key]
			require.True(t, ok, "no case for %s.%s", s.section, key)
			t.Run(s.section+"."+key, func(t *testing.T) {
				check(t, s.section+": {"+key+": "+c.value+"}\n", c.want)
			})
		}
	}
	// Of several bad keys, the first in field order, whatever the order in
	// the file or of a map: the same file always gives the same message.
	for range 20 {
		check(t, "limits: {logs_rate_bytes: -1, max_otlp_attributes: -1, max_series: -1}\n", "limits.max_series:")
		check(t, "ingest: {series_cache_bytes: -1, max_series_per_request: -1}\n", "ingest.max_series_per_request:")
		check(t, "logs_traces: {logs_burst_bytes: 1, log_metrics_max_series: -1, max_line_bytes: -1}\n", "logs_traces.max_line_bytes:")
	}
	// A cluster's error ends with its name.
	check(t, clusters("max_series: -1"), "clusters[1].limits.max_series: must be 0 (unlimited) or positive, got -1 (cluster us-1)")
}

// TestConfigSectionErrorsNameTheYAMLPath loads a bad file for every section
// of Config and checks the message names the bad key by its exact path in
// the file, from `fleetgate check config` too. Each row is loaded several
// times: the same file always gives the same message.
func TestConfigSectionErrorsNameTheYAMLPath(t *testing.T) {
	tok := writeFile(t, "tok", "secret")
	tok2 := writeFile(t, "tok2", "secret2")
	clusters := "clusters:\n  - name: eu-1\n    credentials: {bearer_token_file: " + tok + "}\n  - name: us-1\n    credentials: {bearer_token_file: " + tok2 + "}\n"
	dnsGroup := "failover:\n  groups:\n    - name: web\n      mode: active-active\n      clusters: [eu-1, us-1]\n" +
		"      dns: {namespace: fleet, hostname: web.example.com, targets: {eu-1: [10.0.0.1], us-1: [10.0.0.2]"
	for _, tc := range []struct{ yaml, want string }{
		{clusters + "    limits: {max_series: -1}\n", "clusters[1].limits.max_series: must be 0 (unlimited) or positive, got -1 (cluster us-1)"},
		{"clusters:\n  - name: eu-1\n    query: {url: 'http://q', tls_config: {cert_file: /c}}\n", "clusters[0].query.tls_config: exactly one of key or key_file"},
		// A destination keeps the decode errors of its own keys for Validate
		// (internal/httpclient's Decoded): they name the destination.
		{"clusters:\n  - name: eu-1\n    query: {url: 'http://q', timeout: 5x}\n", `clusters[0].query: unknown unit "x" in duration "5x"`},
		{"identity: {on_conflict: maybe}\n", `identity.on_conflict: "maybe" is not one of reject, overwrite`},
		{"limits: {max_series: -1}\n", "limits.max_series: must be 0 (unlimited) or positive, got -1"},
		{"ingest: {series_cache_bytes: -1, max_series_per_request: -2}\n", "ingest.max_series_per_request: must not be negative, got -2"},
		{"ingest:\n  max_future: 5x\n", `ingest.max_future (line 2): unknown unit "x" in duration "5x"`},
		{"remote_write: {max_decoded_bytes: -1}\n", "remote_write.max_decoded_bytes: must not be negative, got -1"},
		{"storage: {min_free_bytes: -1}\n", "storage.min_free_bytes: must not be negative, got -1"},
		{"storage:\n  out_of_order_window: 10m\n  retention: 5x\n", `storage.retention (line 3): unknown unit "x" in duration "5x"`},
		{"query: {results_cache: {max_size_bytes: 1000}}\n", "query.results_cache.max_size_bytes: must be at least 33554432"},
		{"query: {max_samples: -1}\n", "query.max_samples: must not be negative, got -1"},
		{"health: {healthy_above: 120}\n", "health.healthy_above: must be in (0, 100], got 120"},
		{"health:\n  signals:\n    - {name: errs, expr: 'sum(', good: 1}\n", "health.signals[0] (errs).expr:"},
		{"failover:\n  groups:\n    - {name: web, mode: chaos, clusters: [a]}\n", `failover.groups[0] (web).mode: "chaos" is not one of`},
		{clusters + "failover:\n  groups:\n    - {name: web, mode: active-passive, clusters: [eu-1], standby: [mars]}\n", `failover.groups[0] (web).standby[0]: unknown cluster "mars"`},
		{clusters + dnsGroup + "}}\n", "failover.groups[0] (web).dns: needs signals.kubernetes.dns_endpoints: true"},
		{clusters + dnsGroup + ", mars: [1.1.1.1], jupiter: [2.2.2.2]}}\nsignals: {kubernetes: {dns_endpoints: true}}\n",
			`failover.groups[0] (web).dns.targets.jupiter: cluster "jupiter" is not in the group`},
		{"signals:\n  webhooks:\n    - {name: w, url: 'ftp://x'}\n", `signals.webhooks[0].url: "ftp://x" is not an http(s) URL`},
		{"signals:\n  alertmanagers:\n    - {url: 'http://am', tls_config: {cert_file: /c}}\n", "signals.alertmanagers[0].tls_config: exactly one of key or key_file"},
		{"signals: {kubernetes: {leader_election: {enabled: true}}}\n", "signals.kubernetes.leader_election.namespace: empty"},
		{"ha: {replica_labels: [replica, cluster]}\n", `ha.replica_labels: "cluster" is the cluster identity label`},
		{"forward:\n  destinations:\n    - {name: mimir, url: 'http://m', tls_config: {cert_file: /c}}\n", "forward.destinations[0] (mimir).tls_config: exactly one of key or key_file"},
		{"forward:\n  destinations:\n    - {name: m, url: 'http://m', queue: {max_samples_per_send: -1, max_shards: -1, capacity: -1}}\n", "forward.destinations[0] (m).queue.capacity: must not be negative, got -1"},
		{"forward: {query: {url: 'ftp://q'}}\n", `forward.query.url: "ftp://q" is not an http(s) URL`},
		{"auth:\n  readers:\n    - {name: r, bearer_token_env: R}\n", "auth.readers[0].clusters: must be set"},
		{clusters + "auth:\n  readers:\n    - {name: r, bearer_token_env: R, clusters: [eu-1, mars]}\n", `auth.readers[0].clusters[1]: unknown cluster "mars"`},
		{"otlp: {translation_strategy: Nope}\n", `otlp.translation_strategy: "Nope" is not one of`},
		{"loki_push: {max_request_bytes: -1}\n", "loki_push.max_request_bytes: must not be negative, got -1"},
		{"logs_traces: {span_metrics_max_series: -5}\n", "logs_traces.span_metrics_max_series: must not be negative, got -5"},
		{"logs_storage: {max_bytes: -1}\n", "logs_storage.max_bytes: must not be negative, got -1"},
		{"traces_storage: {max_traces: -1}\n", "traces_storage.max_traces: must not be negative, got -1"},
		{"forward_logs:\n  - {name: loki, url: 'ftp://x'}\n", `forward_logs[0] (loki).url: "ftp://x" is not an http(s) URL`},
		{"forward_logs:\n  - {name: l, url: 'http://x', headers: {Authorization: x}}\n", `forward_logs[0] (l).headers: setting header "Authorization" is not allowed`},
		{"forward_traces:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}\n", `forward_traces[1] (a).name: duplicate destination name "a"`},
		{"forward_traces:\n  - {name: 'a b', url: 'http://x'}\n", `forward_traces[0].name: "a b" must be`},
	} {
		name, _, _ := strings.Cut(tc.want, ":")
		t.Run(name, func(t *testing.T) {
			file := writeFile(t, "fleetgate.yml", tc.yaml)
			for range 5 {
				_, err := loadConfig(file)
				require.Error(t, err)
				// "config <file>: <path>: ..." or "parsing config <file>: <path> (line n): ...".
				_, msg, _ := strings.Cut(err.Error(), ".yml: ")
				require.True(t, strings.HasPrefix(msg, tc.want), "%q does not start with %q", msg, tc.want)
			}
			require.Contains(t, checkConfigOutput(t, file), ".yml: "+tc.want)
		})
	}
}

// checkConfigOutput runs `fleetgate check config file` and returns what it
// printed on stderr.
func checkConfigOutput(t *testing.T, file string) string {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "stderr")
	require.NoError(t, err)
	defer out.Close()
	stderr := os.Stderr
	os.Stderr = out
	rc := checkCommand([]string{"config", file})
	os.Stderr = stderr
	require.Equal(t, 1, rc)
	b, err := os.ReadFile(out.Name())
	require.NoError(t, err)
	return string(b)
}

// Every section of Config is checked by Config.Validate (a table in
// config.go), and TestConfigSectionErrorsNameTheYAMLPath has a bad file for it.
func TestConfigChecksCoverEverySection(t *testing.T) {
	checked := map[string]bool{}
	for _, ch := range (&Config{}).checks() {
		checked[ch.path] = true
	}
	src, err := os.ReadFile("config_test.go")
	require.NoError(t, err)
	for key := range yamlFields(reflect.TypeFor[Config]()) {
		require.True(t, checked[key], "section %s: no check in Config.checks", key)
		require.True(t, strings.Contains(string(src), "\""+key+".") || strings.Contains(string(src), "\""+key+"[") ||
			strings.Contains(string(src), "`"+key+".") || strings.Contains(string(src), "`"+key+"["),
			"section %s: no row in TestConfigSectionErrorsNameTheYAMLPath", key)
	}
}
