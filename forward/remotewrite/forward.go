// Package remotewrite forwards every accepted series (already stamped with
// its cluster) to remote-write destinations such as Mimir, Thanos Receive,
// VictoriaMetrics or Prometheus. It is Prometheus's own remote-write queue
// manager: each destination tails the write-ahead log of the local store
// (the embedded TSDB, or the agent WAL in forward-only mode) with its own
// watcher and shards, so the WAL is the durable queue, a slow or dead
// destination only falls behind on its own, and the receive path never waits
// for any destination.
package remotewrite

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/wlog"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// Config is the `forward` section.
type Config struct {
	Destinations []Destination `yaml:"destinations"`
	// Query, in forward-only mode (storage.embedded: false), is where
	// queries go: the backend the destinations write to.
	Query *fleet.QueryEndpoint `yaml:"query"`
	// FlushDeadline bounds how long shutdown waits for queues to drain (default 1m).
	FlushDeadline model.Duration `yaml:"flush_deadline"`
}

// Destination is one remote-write endpoint.
type Destination struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// Client is how fleetgate connects, the keys of Prometheus's
	// remote_write entries: authorization, basic_auth, oauth2, tls_config,
	// proxy_url, http_headers, ... and the older headers,
	// bearer_token_file, bearer_token_env and tls.
	Client  httpclient.Config `yaml:",inline"`
	Timeout model.Duration    `yaml:"timeout"`
	// Protocol is 1.0 (prometheus.WriteRequest, default) or 2.0 (io.prometheus.write.v2.Request).
	Protocol string `yaml:"protocol"`
	// Queue tunes Prometheus's queue manager (defaults are Prometheus's).
	Queue QueueConfig `yaml:"queue"`
}

// UnmarshalYAML starts from prometheus/common's client defaults.
func (d *Destination) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Destination
	*d = Destination{Client: httpclient.DefaultConfig()}
	return d.Client.Decoded(unmarshal((*plain)(d)))
}

// QueueConfig is the subset of Prometheus's queue_config fleetgate exposes.
type QueueConfig struct {
	Capacity          int            `yaml:"capacity"`
	MinShards         int            `yaml:"min_shards"`
	MaxShards         int            `yaml:"max_shards"`
	MaxSamplesPerSend int            `yaml:"max_samples_per_send"`
	BatchSendDeadline model.Duration `yaml:"batch_send_deadline"`
	MinBackoff        model.Duration `yaml:"min_backoff"`
	MaxBackoff        model.Duration `yaml:"max_backoff"`
	RetryOnRateLimit  *bool          `yaml:"retry_on_http_429"`
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config { return Config{FlushDeadline: model.Duration(time.Minute)} }

// Validate names the first bad field by its path relative to the forward:
// section ("destinations[0] (mimir).url: ...").
func (c *Config) Validate() error {
	names := map[string]bool{}
	for i, d := range c.Destinations {
		field := fmt.Sprintf("destinations[%d]", i)
		if d.Name == "" {
			return fmt.Errorf("%s.name: must be set", field)
		}
		field = fmt.Sprintf("destinations[%d] (%s)", i, d.Name)
		if names[d.Name] {
			return fmt.Errorf("%s.name: duplicate destination name %q", field, d.Name)
		}
		names[d.Name] = true
		u, err := url.Parse(d.URL)
		if d.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s.url: %q is not an http(s) URL", field, d.URL)
		}
		if err := d.Client.Validate(); err != nil {
			return httpclient.Under(field, err)
		}
		switch d.Protocol {
		case "", "1.0", "2.0":
		default:
			return fmt.Errorf("%s.protocol: %q is not one of 1.0, 2.0", field, d.Protocol)
		}
		if d.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must not be negative, got %s", field, d.Timeout)
		}
		q := d.Queue
		// In field order, so that the same file always names the same key.
		for _, f := range []struct {
			key string
			v   int
		}{{"capacity", q.Capacity}, {"min_shards", q.MinShards}, {"max_shards", q.MaxShards}, {"max_samples_per_send", q.MaxSamplesPerSend}} {
			if f.v < 0 {
				return fmt.Errorf("%s.queue.%s: must not be negative, got %d", field, f.key, f.v)
			}
		}
		if q.MaxShards > 0 && q.MinShards > q.MaxShards {
			return fmt.Errorf("%s.queue.min_shards: %d is more than max_shards %d", field, q.MinShards, q.MaxShards)
		}
		for _, f := range []struct {
			key string
			v   model.Duration
		}{{"batch_send_deadline", q.BatchSendDeadline}, {"min_backoff", q.MinBackoff}, {"max_backoff", q.MaxBackoff}} {
			if f.v < 0 {
				return fmt.Errorf("%s.queue.%s: must not be negative, got %s", field, f.key, f.v)
			}
		}
	}
	if c.FlushDeadline < 0 {
		return fmt.Errorf("flush_deadline: must not be negative, got %s", c.FlushDeadline)
	}
	if c.Query != nil {
		if err := c.Query.Validate(); err != nil {
			return httpclient.Under("query", err)
		}
	}
	return nil
}

// remoteWriteConfig turns a destination into Prometheus's remote_write config.
func (d Destination) remoteWriteConfig() (*config.RemoteWriteConfig, error) {
	u, err := url.Parse(d.URL)
	if err != nil {
		return nil, err
	}
	rw := config.DefaultRemoteWriteConfig
	rw.URL = &config_util.URL{URL: u}
	rw.Name = d.Name
	rw.SendExemplars = true
	rw.SendNativeHistograms = true
	rw.MetadataConfig.Send = false // metadata lives in fleetgate's own store, not the WAL
	if d.Timeout > 0 {
		rw.RemoteTimeout = d.Timeout
	}
	if d.Protocol == "2.0" {
		rw.ProtobufMessage = "io.prometheus.write.v2.Request"
	}
	hc, err := d.Client.ClientConfig()
	if err != nil {
		return nil, err
	}
	rw.HTTPClientConfig = hc
	q := config.DefaultQueueConfig
	if d.Queue.Capacity > 0 {
		q.Capacity = d.Queue.Capacity
	}
	if d.Queue.MinShards > 0 {
		q.MinShards = d.Queue.MinShards
	}
	if d.Queue.MaxShards > 0 {
		q.MaxShards = d.Queue.MaxShards
	}
	if d.Queue.MaxSamplesPerSend > 0 {
		q.MaxSamplesPerSend = d.Queue.MaxSamplesPerSend
	}
	if d.Queue.BatchSendDeadline > 0 {
		q.BatchSendDeadline = d.Queue.BatchSendDeadline
	}
	if d.Queue.MinBackoff > 0 {
		q.MinBackoff = d.Queue.MinBackoff
	}
	if d.Queue.MaxBackoff > 0 {
		q.MaxBackoff = d.Queue.MaxBackoff
	}
	q.RetryOnRateLimit = true
	if d.Queue.RetryOnRateLimit != nil {
		q.RetryOnRateLimit = *d.Queue.RetryOnRateLimit
	}
	rw.QueueConfig = q
	return &rw, nil
}

// Forwarder owns the remote-write queues of every destination.
type Forwarder struct {
	rs     *remote.Storage
	logger *slog.Logger
}

// New starts one queue per destination, tailing the WAL under dir (the
// directory that holds `wal/`). It returns nil when there are no destinations.
func New(cfg Config, dir string, r prometheus.Registerer, logger *slog.Logger) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Destinations) == 0 {
		return nil, nil
	}
	logger = logger.With("component", "forward")
	rs := NewStorage(cfg, dir, r, logger)
	return newWithStorage(cfg, rs, logger)
}

// NewStorage is the remote storage whose queues tail the WAL in dir/wal.
func NewStorage(cfg Config, dir string, r prometheus.Registerer, logger *slog.Logger) *remote.Storage {
	fd := time.Duration(cfg.FlushDeadline)
	if fd == 0 {
		fd = time.Duration(DefaultConfig().FlushDeadline)
	}
	return remote.NewStorage(logger, r, func() (int64, error) { return 0, nil }, dir, fd, nil, false)
}

// NewWithStorage wraps a remote storage that already exists (forward-only
// mode: the agent WAL needs it at open time) and applies cfg to it.
func NewWithStorage(cfg Config, rs *remote.Storage, logger *slog.Logger) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newWithStorage(cfg, rs, logger.With("component", "forward"))
}

func newWithStorage(cfg Config, rs *remote.Storage, logger *slog.Logger) (*Forwarder, error) {
	pc := &config.Config{GlobalConfig: config.DefaultGlobalConfig}
	for i, d := range cfg.Destinations {
		rw, err := d.remoteWriteConfig()
		if err != nil {
			_ = rs.Close()
			return nil, httpclient.At(fmt.Sprintf("forward.destinations[%d] (%s)", i, d.Name), err)
		}
		pc.RemoteWriteConfigs = append(pc.RemoteWriteConfigs, rw)
	}
	if err := rs.ApplyConfig(pc); err != nil {
		_ = rs.Close()
		return nil, fmt.Errorf("forward: %w", err)
	}
	for _, d := range cfg.Destinations {
		logger.Info("forwarding to remote-write destination", "name", d.Name, "url", d.URL)
	}
	return &Forwarder{rs: rs, logger: logger}, nil
}

// WriteNotified is what the WAL owner notifies on every write, so the
// queues read new data at once instead of on their poll tick.
func (f *Forwarder) WriteNotified() wlog.WriteNotified { return f.rs }

// Close flushes (up to a minute) and stops every queue. What was not sent
// stays in the WAL and is sent after the next start.
func (f *Forwarder) Close() error {
	if f == nil {
		return nil
	}
	if err := f.rs.Close(); err != nil && !errors.Is(err, errAlreadyClosed) {
		return fmt.Errorf("closing forward queues: %w", err)
	}
	return nil
}

var errAlreadyClosed = errors.New("already closed")
