package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/failover"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/forward/queue"
	"github.com/fleetgate/fleetgate/forward/remotewrite"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/ingest/ha"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	lokiin "github.com/fleetgate/fleetgate/ingest/loki"
	"github.com/fleetgate/fleetgate/ingest/otlp"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/ingest/promrw"
	"github.com/fleetgate/fleetgate/internal/httpclient"
	"github.com/fleetgate/fleetgate/query/promapi"
	"github.com/fleetgate/fleetgate/store/logs"
	"github.com/fleetgate/fleetgate/store/metrics"
	"github.com/fleetgate/fleetgate/store/traces"
)

// Config is the whole configuration file. Each part is owned and validated
// by the package that uses it.
type Config struct {
	Clusters    []fleet.ClusterConfig  `yaml:"clusters"`
	Identity    fleet.IdentityConfig   `yaml:"identity"`
	Limits      fleet.Limits           `yaml:"limits"` // every cluster's, unless its own limits: block overrides them
	Ingest      pipeline.Config        `yaml:"ingest"`
	RemoteWrite promrw.Config          `yaml:"remote_write"`
	Storage     metrics.Config         `yaml:"storage"`
	Query       promapi.Config         `yaml:"query"`
	Health      health.Config          `yaml:"health"`
	Failover    failover.Config        `yaml:"failover"`
	Signals     failover.SignalsConfig `yaml:"signals"`
	HA          ha.Config              `yaml:"ha"`      // federation.go
	Forward     remotewrite.Config     `yaml:"forward"` // federation.go
	Auth        access.Config          `yaml:"auth"`

	logsTracesConfig `yaml:",inline"` // otlp, loki_push, logs_traces, logs_storage, traces_storage, forward_logs, forward_traces
}

func (c *Config) fleet() fleet.Config {
	lim := c.Limits
	return fleet.Config{Clusters: c.Clusters, OnConflict: c.Identity.OnConflict, DevDefaultCluster: c.Identity.DevDefaultCluster, Limits: &lim}
}

// newConfig is the configuration before the file is read: each section's
// DefaultConfig(), the values a key left out keeps. (The constructors still
// read 0 as the default, so a key set to 0 means the same.)
func newConfig() *Config {
	return &Config{
		Limits:      fleet.DefaultLimits(),
		Ingest:      pipeline.DefaultConfig(),
		RemoteWrite: promrw.DefaultConfig(),
		Storage:     metrics.DefaultConfig(),
		Query:       promapi.DefaultConfig(),
		Health:      health.DefaultConfig(),
		HA:          ha.DefaultConfig(),
		Forward:     remotewrite.DefaultConfig(),
		logsTracesConfig: logsTracesConfig{
			OTLP:          otlp.DefaultConfig(),
			LokiPush:      lokiin.DefaultConfig(),
			LogsTraces:    logtrace.DefaultConfig(),
			LogsStorage:   logs.DefaultConfig(),
			TracesStorage: traces.DefaultConfig(),
		},
	}
}

// A configCheck is one validation of the file: path is the YAML path of
// what it checks, and check names the bad field relative to path
// ("max_series: ...", "[1].name: ...").
type configCheck struct {
	path  string
	check func() error
}

// checks are every validation of the file: each section's own Validate(),
// in the order of the file's sections, then the checks across sections
// (after the sections they join). TestConfigChecksCoverEverySection
// fails when a section of Config has none.
func (c *Config) checks() []configCheck {
	storage := c.Storage
	if storage.Path == "" {
		storage.Path = "-" // storage.path comes from a flag and is checked at start
	}
	return []configCheck{
		{"identity", c.Identity.Validate},
		{"limits", c.Limits.Validate},
		{"clusters", func() error { return fleet.ValidateClusters(c.Clusters, c.Limits) }},
		{"ingest", c.Ingest.Validate},
		{"remote_write", c.RemoteWrite.Validate},
		{"storage", storage.Validate},
		{"ha", c.HA.Validate},
		{"forward", c.Forward.Validate},
		{"query", c.Query.Validate},
		{"otlp", c.OTLP.Validate},
		{"loki_push", c.LokiPush.Validate},
		{"logs_traces", c.LogsTraces.Validate},
		{"logs_storage", c.LogsStorage.Validate},
		{"traces_storage", c.TracesStorage.Validate},
		{"forward_logs", func() error { return queue.ValidateList(c.ForwardLogs) }},
		{"forward_traces", func() error { return queue.ValidateList(c.ForwardTraces) }},
		{"auth", c.Auth.Validate},
		{"health", c.Health.Validate},
		{"failover", c.Failover.Validate},
		{"signals", c.Signals.Validate},
		// Across sections.
		{"auth", func() error { return c.Auth.CheckClusters(c.Clusters) }},
		{"failover", func() error { return c.Failover.CheckClusters(c.knownCluster) }},
		{"failover", c.checkFailoverDNS},
	}
}

// Validate runs every check and returns the first error with the YAML path
// of its section in front: the one place that adds it. storage.path comes
// from a flag and is checked at start.
func (c *Config) Validate() error {
	for _, ch := range c.checks() {
		if err := ch.check(); err != nil {
			return httpclient.Under(ch.path, err)
		}
	}
	return nil
}

// loadConfig reads and validates a config file. An empty path gives the
// embedded defaults.
func loadConfig(path string) (*Config, error) {
	cfg := newConfig()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parsing config %s: %w", path, locateDecodeError(b, err))
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// locateDecodeError puts the YAML path and line of the bad value in front
// of a decode error that names neither: the error a type's own
// UnmarshalYAML returns (model.Duration's `unknown unit "x" in duration
// "5x"`). yaml.v3's own errors (wrong types, unknown keys) carry their
// line and are returned as they are.
func locateDecodeError(b []byte, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil || len(root.Content) == 0 {
		return err
	}
	path, n := badNode(root.Content[0], reflect.TypeFor[Config](), "")
	if path == "" {
		return err
	}
	return fmt.Errorf("%s (line %d): %w", path, n.Line, err)
}

// badNode descends from n, a value of type t at path, to the deepest key,
// index or map key whose value alone does not decode, by the yaml tags of
// t (inline structs, slices as [i], maps as .key, pointers).
func badNode(n *yaml.Node, t reflect.Type, path string) (string, *yaml.Node) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fails := func(v *yaml.Node, t reflect.Type) bool { return v.Decode(reflect.New(t).Interface()) != nil }
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			if ft, ok := fields[k]; ok && fails(v, ft) {
				if path != "" {
					k = path + "." + k
				}
				return badNode(v, ft, k)
			}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; fails(v, t.Elem()) {
				return badNode(v, t.Elem(), path+"."+n.Content[i].Value)
			}
		}
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i, v := range n.Content {
			if fails(v, t.Elem()) {
				return badNode(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	return path, n
}

// yamlFields are the YAML keys of struct type t and their types, with the
// keys of inline structs.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
		case strings.Contains(opts, "inline"):
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				maps.Copy(out, yamlFields(ft))
			}
		case f.IsExported():
			if name == "" {
				name = strings.ToLower(f.Name) // yaml.v3's default key
			}
			out[name] = f.Type
		}
	}
	return out
}
