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
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/wlog"

	"github.com/fleetgate/fleetgate/internal/durable"
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
	// MinFreeBytes is a free-space reserve: writes are refused (503) while the
	// filesystem of Path has less free space, before the WAL can tear. 0: off.
	MinFreeBytes int64 `yaml:"min_free_bytes"`
	// Embedded false is forward-only mode: no embedded TSDB, only a WAL
	// that the forward queues drain (cmd/fleetgate/federation.go).
	Embedded *bool `yaml:"embedded"`
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
// Retention is also the --storage.retention flag's default.
func DefaultConfig() Config {
	return Config{Retention: model.Duration(15 * 24 * time.Hour), MaxExemplars: 100_000}
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	if c.Path == "" {
		return errors.New("path: must be set")
	}
	if c.Retention < 0 {
		return fmt.Errorf("retention: must not be negative, got %s", c.Retention)
	}
	if c.RetentionSize < 0 {
		return fmt.Errorf("retention_size_bytes: must not be negative, got %d", c.RetentionSize)
	}
	if c.OutOfOrderWindow < 0 {
		return fmt.Errorf("out_of_order_window: must not be negative, got %s", c.OutOfOrderWindow)
	}
	if c.BlockDuration < 0 {
		return fmt.Errorf("block_duration: must not be negative, got %s", c.BlockDuration)
	}
	if c.MinFreeBytes < 0 {
		return fmt.Errorf("min_free_bytes: must not be negative, got %d", c.MinFreeBytes)
	}
	if c.MaxExemplars < 0 {
		return fmt.Errorf("max_exemplars: must not be negative, got %d", c.MaxExemplars)
	}
	return nil
}

// Option adjusts how Open opens the store.
type Option func(*openOptions)

type openOptions struct {
	lifecycle     tsdb.SeriesLifecycleCallback
	maxFuture     time.Duration
	now           func() time.Time
	freeBytes     func(path string) (uint64, error)
	checkInterval time.Duration
	metaInterval  time.Duration
}

// WithSeriesLifecycle sets the TSDB's series lifecycle hook, which may
// refuse new series (per-cluster series limits) and sees every series
// created (WAL replay included) and garbage-collected. If it also has
// Replaying() and Enforce() methods, an in-process reopen (after a WAL
// failure) calls Replaying before it replays the WAL again and Enforce once
// the TSDB is open, so that the replay neither counts series twice nor
// refuses any.
func WithSeriesLifecycle(cb tsdb.SeriesLifecycleCallback) Option {
	return func(o *openOptions) { o.lifecycle = cb }
}

// WithMaxFuture is how far ahead of now a sample may be (ingest.max_future,
// default 10m). A TSDB that already holds newer samples is poisoned: every
// current sample would be out of bounds.
func WithMaxFuture(d time.Duration) Option { return func(o *openOptions) { o.maxFuture = d } }

// WithFreeSpace replaces statfs (tests inject a full disk) and sets how often
// free space is checked and a failed WAL is retried (default 1s).
func WithFreeSpace(freeBytes func(path string) (uint64, error), every time.Duration) Option {
	return func(o *openOptions) { o.freeBytes, o.checkInterval = freeBytes, every }
}

// WithMetadataSaveInterval sets how often changed metric metadata is saved
// (default 30s): a crash loses at most this much of it.
func WithMetadataSaveInterval(d time.Duration) Option {
	return func(o *openOptions) { o.metaInterval = d }
}

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(o *openOptions) { o.now = now } }

func buildOptions(options []Option) *openOptions {
	o := &openOptions{maxFuture: DefaultMaxFuture, now: time.Now}
	for _, f := range options {
		f(o)
	}
	if o.maxFuture <= 0 {
		o.maxFuture = DefaultMaxFuture
	}
	if o.metaInterval <= 0 {
		o.metaInterval = metadataSaveInterval
	}
	return o
}

// replayAware is a series lifecycle hook that counts series (see WithSeriesLifecycle).
type replayAware interface {
	Replaying()
	Enforce()
}

// DefaultMaxFuture is Prometheus's write-handler default.
const DefaultMaxFuture = 10 * time.Minute

// Store is the embedded TSDB behind a guard: every appender and querier goes
// through it (see guard.go), so that no write is acknowledged after a WAL
// failure until the WAL is good again. It implements storage.AppendableV2,
// storage.SampleAndChunkQueryable and the TSDB status API.
type Store struct {
	g         *guard
	dir       string
	meta      *Metadata
	logger    *slog.Logger
	poisoned  prometheus.Gauge
	maxFuture time.Duration
	now       func() time.Time
	lifecycle tsdb.SeriesLifecycleCallback
	// metaInterval is how often Run saves changed metadata.
	metaInterval time.Duration
}

// metadataSaveInterval is how often changed metric metadata is written to
// disk by default, so that a crash loses at most this much of it.
const metadataSaveInterval = 30 * time.Second

// Open opens (and replays the WAL of) the TSDB in cfg.Path.
// r may be nil.
func Open(cfg Config, r prometheus.Registerer, logger *slog.Logger, options ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := buildOptions(options)
	g, err := newGuard("TSDB", cfg.Path, r, logger, guardOptions{
		MinFreeBytes: uint64(cfg.MinFreeBytes), CheckInterval: o.checkInterval, FreeBytes: o.freeBytes,
	})
	if err != nil {
		return nil, err
	}
	s := &Store{g: g, dir: cfg.Path, logger: logger, meta: NewMetadata(), maxFuture: o.maxFuture, now: o.now, lifecycle: o.lifecycle, metaInterval: o.metaInterval,
		poisoned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetgate_storage_poisoned",
			Help: "1 when the TSDB holds samples further ahead than ingest.max_future: writes are refused (503) until `fleetgate storage drop-future` repairs it."}),
	}
	if rl, ok := o.lifecycle.(replayAware); ok {
		g.beforeReplay, g.afterReplay = rl.Replaying, rl.Enforce
	}
	if r != nil {
		if err := r.Register(s.poisoned); err != nil {
			return nil, fmt.Errorf("registering storage metrics: %w", err)
		}
	}
	if err := g.start(func(reg prometheus.Registerer) (*instance, error) { return s.openTSDB(cfg, reg) }); err != nil {
		return nil, err
	}
	if err := s.meta.load(filepath.Join(cfg.Path, metadataFile)); err != nil {
		logger.Warn("metric metadata not restored", "err", err)
	}
	return s, nil
}

// Run is the store's actor in main's run group, until ctx is done or
// Close: it checks free space, reopens the TSDB after a WAL failure once the
// WAL can be written again, and saves changed metric metadata every
// metadata save interval. Without Run the store serves reads and writes but
// does not recover from a WAL failure by itself, and saves metadata only on
// Close.
func (s *Store) Run(ctx context.Context) error {
	return s.g.run(ctx, s.saveMetadataLoop)
}

// saveMetadataLoop writes changed metadata every metaInterval until ctx is done.
func (s *Store) saveMetadataLoop(ctx context.Context) {
	t := time.NewTicker(s.metaInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.meta.dirty.Load() {
			continue
		}
		if err := s.meta.save(filepath.Join(s.dir, metadataFile)); err != nil {
			s.logger.Warn("saving metric metadata (retried)", "err", err)
		}
	}
}

func tsdbOptions(cfg Config) *tsdb.Options {
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
	return opts
}

// openTSDB opens the TSDB once (at start and on every reopen), detecting a
// poisoned store before retention or compaction can act on it.
func (s *Store) openTSDB(cfg Config, reg prometheus.Registerer) (*instance, error) {
	opts := tsdbOptions(cfg)
	opts.SeriesLifecycleCallback = s.lifecycle
	limit := s.now().Add(s.maxFuture).UnixMilli()
	blocksMax, err := BlocksMaxTime(cfg.Path)
	if err != nil {
		return nil, err
	}
	if blocksMax > limit {
		// Retention counts back from the newest block: a far-future block
		// would make it delete every real one. Suspend it while poisoned.
		opts.RetentionDuration, opts.MaxBytes = 0, 0
	}
	db, err := tsdb.Open(cfg.Path, s.logger.With("component", "tsdb"), reg, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("opening TSDB in %s: %w", cfg.Path, err)
	}
	newest := max(blocksMax, db.Head().MaxTime())
	if newest > limit {
		// Compacting a head that reaches far ahead writes block after block
		// (for ever, for MaxInt64): stop it before it starts.
		db.DisableCompactions()
		s.poisoned.Set(1)
		at := formatMs(newest)
		s.logger.Error("the TSDB holds samples far in the future: every current sample would be out of bounds, so writes are refused with 503 "+
			"(senders keep their data and retry) and retention and compaction are suspended. "+
			"Stop fleetgate and run `fleetgate storage drop-future --storage.path="+cfg.Path+"` to move the future samples aside, then start it again.",
			"newest_sample", at, "max_future", s.maxFuture, "dir", cfg.Path)
		return &instance{db: db, app: db, close: db.Close, poisoned: &UnavailableError{Reason: "poisoned", After: time.Minute,
			Msg: fmt.Sprintf("the TSDB holds samples up to %s, more than %s ahead of now, so every current sample would be out of bounds; "+
				"writes are refused until an operator runs `fleetgate storage drop-future` (see the fleetgate log); retry later", at, s.maxFuture)}}, nil
	}
	s.poisoned.Set(0)
	return &instance{db: db, app: db, close: db.Close}, nil
}

func formatMs(ms int64) string {
	if ms > 1<<62 || ms < -(1<<62) {
		return fmt.Sprintf("%d ms", ms)
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// BlocksMaxTime is the newest block end (ms) among the blocks in dir, read
// from their meta.json files without opening the TSDB; MinInt64 when there
// are none.
func BlocksMaxTime(dir string) (int64, error) {
	newest := int64(math.MinInt64)
	metas, err := blockMetas(dir)
	for _, m := range metas {
		newest = max(newest, m.MaxTime)
	}
	return newest, err
}

type blockMeta struct {
	dir string
	tsdb.BlockMeta
}

func blockMetas(dir string) ([]blockMeta, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	var out []blockMeta
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := ulid.ParseStrict(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue // an unfinished block: the TSDB deletes it at open
		}
		if err != nil {
			return nil, fmt.Errorf("reading block meta: %w", err)
		}
		var m tsdb.BlockMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("decoding %s/meta.json: %w", e.Name(), err)
		}
		out = append(out, blockMeta{dir: filepath.Join(dir, e.Name()), BlockMeta: m})
	}
	return out, nil
}

// AppenderV2 implements storage.AppendableV2. While the store cannot take
// writes the appender refuses every sample with an *UnavailableError.
func (s *Store) AppenderV2(ctx context.Context) storage.AppenderV2 { return s.g.appenderV2(ctx) }

// Querier implements storage.Queryable.
func (s *Store) Querier(mint, maxt int64) (storage.Querier, error) {
	inst, err := s.g.acquire()
	if err != nil {
		return nil, err
	}
	q, err := inst.db.Querier(mint, maxt)
	if err != nil {
		s.g.release()
		return nil, err
	}
	return &querier{Querier: q, g: s.g}, nil
}

// ChunkQuerier implements storage.ChunkQueryable.
func (s *Store) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	inst, err := s.g.acquire()
	if err != nil {
		return nil, err
	}
	q, err := inst.db.ChunkQuerier(mint, maxt)
	if err != nil {
		s.g.release()
		return nil, err
	}
	return &chunkQuerier{ChunkQuerier: q, g: s.g}, nil
}

type querier struct {
	storage.Querier
	g      *guard
	closed atomic.Bool
}

func (q *querier) Close() error {
	err := q.Querier.Close()
	if !q.closed.Swap(true) {
		q.g.release()
	}
	return err
}

type chunkQuerier struct {
	storage.ChunkQuerier
	g      *guard
	closed atomic.Bool
}

func (q *chunkQuerier) Close() error {
	err := q.ChunkQuerier.Close()
	if !q.closed.Swap(true) {
		q.g.release()
	}
	return err
}

// with runs f on the open TSDB, as one user of the guard.
func (s *Store) with(f func(db *tsdb.DB) error) error {
	inst, err := s.g.acquire()
	if err != nil {
		return err
	}
	defer s.g.release()
	return f(inst.db)
}

// StartTime implements storage.Storage: the oldest sample time.
func (s *Store) StartTime() (t int64, err error) {
	err = s.with(func(db *tsdb.DB) error {
		t, err = db.StartTime()
		return err
	})
	return t, err
}

// MaxTime is the time of the newest sample in the head (math.MinInt64 when empty).
func (s *Store) MaxTime() (t int64, err error) {
	err = s.with(func(db *tsdb.DB) error {
		t = db.Head().MaxTime()
		return nil
	})
	return t, err
}

// Ready is nil when the store takes writes, else why not (for /-/ready).
func (s *Store) Ready() error { return s.g.ready() }

// SetWriteNotified makes the TSDB (also after a reopen) notify wn of WAL writes.
func (s *Store) SetWriteNotified(wn wlog.WriteNotified) { s.g.setWriteNotified(wn) }

// Metadata is the metric metadata reported by senders.
func (s *Store) Metadata() *Metadata { return s.meta }

// Close ends Run, flushes metadata and closes the TSDB cleanly.
func (s *Store) Close() error {
	s.g.stopRun()
	merr := s.meta.save(filepath.Join(s.dir, metadataFile))
	return errors.Join(merr, s.g.shutdown())
}

// Stats implements the TSDB status API's statistics.
func (s *Store) Stats(statsByLabelName string, limit int) (st *tsdb.Stats, err error) {
	err = s.with(func(db *tsdb.DB) error {
		st = db.Head().Stats(statsByLabelName, limit)
		return nil
	})
	return st, err
}

// WALReplayStatus: the WAL is replayed before Open returns.
func (s *Store) WALReplayStatus() (tsdb.WALReplayStatus, error) {
	return tsdb.WALReplayStatus{}, nil
}

// BlockMetas lists the persisted blocks.
func (s *Store) BlockMetas() (out []tsdb.BlockMeta, err error) {
	err = s.with(func(db *tsdb.DB) error {
		blocks := db.Blocks()
		out = make([]tsdb.BlockMeta, 0, len(blocks))
		for _, b := range blocks {
			out = append(out, b.Meta())
		}
		return nil
	})
	return out, err
}

// CleanTombstones implements the TSDB admin API.
func (s *Store) CleanTombstones() error {
	return s.with(func(db *tsdb.DB) error { return db.CleanTombstones() })
}

// Delete implements the TSDB admin API.
func (s *Store) Delete(ctx context.Context, mint, maxt int64, ms ...*labels.Matcher) error {
	return s.with(func(db *tsdb.DB) error { return db.Delete(ctx, mint, maxt, ms...) })
}

// Snapshot implements the TSDB admin API.
func (s *Store) Snapshot(dir string, withHead bool) error {
	return s.with(func(db *tsdb.DB) error { return db.Snapshot(dir, withHead) })
}

// ExemplarQueryable exposes the exemplar store.
func (s *Store) ExemplarQueryable() storage.ExemplarQueryable { return exemplarQueryable{s} }

type exemplarQueryable struct{ s *Store }

func (e exemplarQueryable) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return exemplarQuerier{ctx: ctx, s: e.s}, nil
}

// exemplarQuerier opens the TSDB's exemplar querier for each Select, as a user of the guard.
type exemplarQuerier struct {
	ctx context.Context
	s   *Store
}

func (e exemplarQuerier) Select(start, end int64, matchers ...[]*labels.Matcher) (out []exemplar.QueryResult, err error) {
	err = e.s.with(func(db *tsdb.DB) error {
		q, err := db.ExemplarQuerier(e.ctx)
		if err != nil {
			return err
		}
		out, err = q.Select(start, end, matchers...)
		return err
	})
	return out, err
}

const metadataFile = "fleetgate-metadata.json"

// Metadata keeps the latest metadata of each metric family, per cluster.
type Metadata struct {
	dirty atomic.Bool // changed since the last save
	mu    sync.RWMutex
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
	m.dirty.Store(true)
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

// save writes the metadata durably (tmp file, fsync, rename, directory
// fsync); a failed save leaves the previous file and the dirty mark.
func (m *Metadata) save(path string) error {
	m.dirty.Store(false)
	m.mu.RLock()
	b, err := json.Marshal(m.m)
	m.mu.RUnlock()
	if err != nil {
		m.dirty.Store(true)
		return fmt.Errorf("encoding metadata: %w", err)
	}
	if err := durable.WriteFile(path, b, 0o644); err != nil {
		m.dirty.Store(true)
		return fmt.Errorf("writing metadata: %w", err)
	}
	return nil
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
