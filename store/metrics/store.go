// Package metrics is the embedded metrics store: a Prometheus TSDB with its
// WAL, retention, clean shutdown and WAL replay, plus the metric metadata that
// senders report.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Config of the embedded TSDB.
type Config struct {
	// Path is the data directory (flag --storage.path).
	Path string `yaml:"-"`
	// Retention is how long samples are kept (flag --storage.retention).
	Retention model.Duration `yaml:"retention"`
	// RetentionSize bounds the bytes of persisted blocks; 0 means no bound.
	RetentionSize int64 `yaml:"retention_size_bytes"`
	// OutOfOrderWindow accepts samples this much older than a series' newest one.
	OutOfOrderWindow model.Duration `yaml:"out_of_order_window"`
	// MaxExemplars kept in the circular exemplar store; 0 disables exemplars.
	MaxExemplars int64 `yaml:"max_exemplars"`
	// BlockDuration is the head block range (default 2h). Samples older than
	// about 1.5 blocks behind the newest are outside the appendable window
	// unless the out-of-order window allows them.
	BlockDuration model.Duration `yaml:"block_duration"`
	// StartTimestamps stores start (created) timestamps sent with samples.
	StartTimestamps bool `yaml:"start_timestamps"`
	// Embedded false is forward-only mode: no embedded TSDB, only a WAL
	// that the forward queues drain (cmd/fleetgate/federation.go).
	Embedded *bool `yaml:"embedded"`
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Path == "" {
		return errors.New("storage.path: must be set")
	}
	if c.Retention < 0 {
		return fmt.Errorf("storage.retention: must not be negative, got %s", c.Retention)
	}
	if c.RetentionSize < 0 {
		return fmt.Errorf("storage.retention_size_bytes: must not be negative, got %d", c.RetentionSize)
	}
	if c.OutOfOrderWindow < 0 {
		return fmt.Errorf("storage.out_of_order_window: must not be negative, got %s", c.OutOfOrderWindow)
	}
	if c.BlockDuration < 0 {
		return fmt.Errorf("storage.block_duration: must not be negative, got %s", c.BlockDuration)
	}
	if c.MaxExemplars < 0 {
		return fmt.Errorf("storage.max_exemplars: must not be negative, got %d", c.MaxExemplars)
	}
	return nil
}

// Store is the embedded TSDB. It implements storage.AppendableV2 and
// storage.SampleAndChunkQueryable through the embedded *tsdb.DB.
type Store struct {
	*tsdb.DB
	dir    string
	meta   *Metadata
	logger *slog.Logger
}

// Option adjusts the TSDB options Open uses.
type Option func(*tsdb.Options)

// WithSeriesLifecycle sets the TSDB's series lifecycle hook, which may
// refuse new series (per-cluster series limits) and sees every series
// created (WAL replay included) and garbage-collected.
func WithSeriesLifecycle(cb tsdb.SeriesLifecycleCallback) Option {
	return func(o *tsdb.Options) { o.SeriesLifecycleCallback = cb }
}

// Open opens (and replays the WAL of) the TSDB in cfg.Path.
func Open(cfg Config, r prometheus.Registerer, logger *slog.Logger, options ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := tsdb.DefaultOptions()
	if cfg.Retention > 0 {
		opts.RetentionDuration = int64(time.Duration(cfg.Retention) / time.Millisecond)
	}
	opts.MaxBytes = cfg.RetentionSize
	opts.OutOfOrderTimeWindow = int64(time.Duration(cfg.OutOfOrderWindow) / time.Millisecond)
	opts.EnableExemplarStorage = cfg.MaxExemplars > 0
	opts.MaxExemplars = cfg.MaxExemplars
	opts.EnableOverlappingCompaction = true
	if cfg.BlockDuration > 0 {
		opts.MinBlockDuration = int64(time.Duration(cfg.BlockDuration) / time.Millisecond)
		opts.MaxBlockDuration = opts.MinBlockDuration
	}
	if cfg.StartTimestamps {
		opts.EnableSTStorage = true
		opts.EnableHistogramSTEncoding = true
		opts.FloatChunkEncoding = chunkenc.EncXOR2
	}
	for _, o := range options {
		o(opts)
	}
	db, err := tsdb.Open(cfg.Path, logger.With("component", "tsdb"), r, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("opening TSDB in %s: %w", cfg.Path, err)
	}
	s := &Store{DB: db, dir: cfg.Path, logger: logger, meta: NewMetadata()}
	if err := s.meta.load(filepath.Join(cfg.Path, metadataFile)); err != nil {
		logger.Warn("metric metadata not restored", "err", err)
	}
	return s, nil
}

// Metadata is the metric metadata reported by senders.
func (s *Store) Metadata() *Metadata { return s.meta }

// Close flushes metadata and closes the TSDB cleanly.
func (s *Store) Close() error {
	merr := s.meta.save(filepath.Join(s.dir, metadataFile))
	return errors.Join(merr, s.DB.Close())
}

// Stats implements the TSDB status API's statistics.
func (s *Store) Stats(statsByLabelName string, limit int) (*tsdb.Stats, error) {
	return s.DB.Head().Stats(statsByLabelName, limit), nil
}

// WALReplayStatus: the WAL is replayed before Open returns.
func (s *Store) WALReplayStatus() (tsdb.WALReplayStatus, error) {
	return tsdb.WALReplayStatus{}, nil
}

// BlockMetas lists the persisted blocks.
func (s *Store) BlockMetas() ([]tsdb.BlockMeta, error) {
	blocks := s.DB.Blocks()
	out := make([]tsdb.BlockMeta, 0, len(blocks))
	for _, b := range blocks {
		out = append(out, b.Meta())
	}
	return out, nil
}

// ExemplarQueryable exposes the exemplar store.
func (s *Store) ExemplarQueryable() storage.ExemplarQueryable { return exemplarQueryable{s.DB} }

type exemplarQueryable struct{ db *tsdb.DB }

func (e exemplarQueryable) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return e.db.ExemplarQuerier(ctx)
}

const metadataFile = "fleetgate-metadata.json"

// Metadata keeps the latest metadata of each metric family, per cluster.
type Metadata struct {
	mu sync.RWMutex
	// family -> cluster -> metadata
	m map[string]map[string]metadata.Metadata
}

// NewMetadata returns an empty metadata store.
func NewMetadata() *Metadata { return &Metadata{m: map[string]map[string]metadata.Metadata{}} }

// SetMetadata records metadata for a family as reported by a cluster.
func (m *Metadata) SetMetadata(cluster, family string, md metadata.Metadata) {
	if family == "" {
		return
	}
	m.mu.RLock()
	cur, ok := m.m[family][cluster]
	m.mu.RUnlock()
	if ok && cur == md {
		return
	}
	// Receivers may pass strings that point into a reused request buffer:
	// keep copies.
	cluster, family = strings.Clone(cluster), strings.Clone(family)
	md.Help, md.Unit = strings.Clone(md.Help), strings.Clone(md.Unit)
	m.mu.Lock()
	defer m.mu.Unlock()
	byCluster := m.m[family]
	if byCluster == nil {
		byCluster = map[string]metadata.Metadata{}
		m.m[family] = byCluster
	}
	byCluster[cluster] = md
}

// Entry is one metadata entry in the Prometheus /api/v1/metadata shape.
type Entry struct {
	Type model.MetricType `json:"type"`
	Help string           `json:"help"`
	Unit string           `json:"unit"`
}

// List returns metadata by family like Prometheus's /api/v1/metadata: at most
// limit families (all when limit < 0), each with at most limitPerMetric
// distinct entries; metric filters to one family when set.
func (m *Metadata) List(metric string, limit, limitPerMetric int) map[string][]Entry {
	return m.ListFor(metric, limit, limitPerMetric, nil)
}

// ListFor is List over the metadata reported by the clusters visible says
// yes to (every cluster when visible is nil): a family only some other
// cluster reported is not listed.
func (m *Metadata) ListFor(metric string, limit, limitPerMetric int, visible func(cluster string) bool) map[string][]Entry {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.m))
	for f, byCluster := range m.m {
		if metric != "" && f != metric {
			continue
		}
		for c := range byCluster {
			if visible == nil || visible(c) {
				names = append(names, f)
				break
			}
		}
	}
	sort.Strings(names)
	out := map[string][]Entry{}
	for _, f := range names {
		if limit >= 0 && len(out) >= limit {
			break
		}
		seen := map[Entry]bool{}
		clusters := make([]string, 0, len(m.m[f]))
		for c := range m.m[f] {
			if visible == nil || visible(c) {
				clusters = append(clusters, c)
			}
		}
		sort.Strings(clusters)
		var entries []Entry
		for _, c := range clusters {
			md := m.m[f][c]
			e := Entry{Type: md.Type, Help: md.Help, Unit: md.Unit}
			if seen[e] {
				continue
			}
			if limitPerMetric > 0 && len(entries) >= limitPerMetric {
				break
			}
			seen[e] = true
			entries = append(entries, e)
		}
		out[f] = entries
	}
	return out
}

func (m *Metadata) save(path string) error {
	m.mu.RLock()
	b, err := json.Marshal(m.m)
	m.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("encoding metadata: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("writing metadata: %w", err)
	}
	return os.Rename(tmp, path)
}

func (m *Metadata) load(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	mm := map[string]map[string]metadata.Metadata{}
	if err := json.Unmarshal(b, &mm); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	m.mu.Lock()
	m.m = mm
	m.mu.Unlock()
	return nil
}
