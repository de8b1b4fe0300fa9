package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/failover"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/forward/remotewrite"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/ingest/ha"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/ingest/promrw"
	"github.com/fleetgate/fleetgate/query/promapi"
	"github.com/fleetgate/fleetgate/store/metrics"
)

// Config is the whole configuration file. Each part is owned and validated
// by the package that uses it.
type Config struct {
	Clusters    []fleet.ClusterConfig  `yaml:"clusters"`
	Identity    identityConfig         `yaml:"identity"`
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

type identityConfig struct {
	OnConflict        fleet.ConflictPolicy `yaml:"on_conflict"`
	DevDefaultCluster string               `yaml:"dev_default_cluster"`
}

func (c *Config) fleet() fleet.Config {
	lim := c.Limits
	return fleet.Config{Clusters: c.Clusters, OnConflict: c.Identity.OnConflict, DevDefaultCluster: c.Identity.DevDefaultCluster, Limits: &lim}
}

// newConfig is the configuration before the file is read: the defaults
// that a key left out keeps, where 0 does not mean "default".
func newConfig() *Config {
	return &Config{Limits: fleet.DefaultLimits()}
}

// Validate checks every part; storage.path comes from a flag and is checked at start.
func (c *Config) Validate() error {
	fc := c.fleet()
	if err := fc.Validate(); err != nil {
		return err
	}
	if err := c.Ingest.Validate(); err != nil {
		return err
	}
	if err := c.RemoteWrite.Validate(); err != nil {
		return err
	}
	st := c.Storage
	if st.Path == "" {
		st.Path = "-"
	}
	if err := st.Validate(); err != nil {
		return err
	}
	if err := c.HA.Validate(); err != nil {
		return err
	}
	if err := c.Forward.Validate(); err != nil {
		return err
	}
	if err := c.Query.Validate(); err != nil {
		return err
	}
	if err := c.logsTracesConfig.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(c.Clusters); err != nil {
		return err
	}
	return c.validateHealthFailover()
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
		return nil, fmt.Errorf("parsing config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}
