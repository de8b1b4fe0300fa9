// Package pipeline takes decoded series from every ingest protocol, proves and
// stamps their cluster identity, validates and limits them, and appends them
// to the sink (the embedded TSDB, or the forward-only WAL).
package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

// Config limits what one request may carry. Per-cluster limits (label
// counts and lengths among them) are fleet.Limits.
type Config struct {
	MaxSeriesPerRequest int `yaml:"max_series_per_request"`
	// MaxFuture is how far ahead of now a sample, histogram or exemplar (and
	// a log line or span) may be; later ones are refused (default 10m, as
	// Prometheus's write handler).
	MaxFuture model.Duration `yaml:"max_future"`
	// SeriesCacheBytes bounds the cache of known series (about 48 bytes
	// each) that lets them skip stamping and the storage index lookup.
	SeriesCacheBytes int `yaml:"series_cache_bytes"`

	// Keys that moved to the limits: section; set, they fail validation
	// naming their new place.
	MovedMaxLabelsPerSeries  *int `yaml:"max_labels_per_series"`
	MovedMaxLabelNameLength  *int `yaml:"max_label_name_length"`
	MovedMaxLabelValueLength *int `yaml:"max_label_value_length"`
}

// DefaultMaxFuture is ingest.max_future when not set.
const DefaultMaxFuture = 10 * time.Minute

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{
		MaxSeriesPerRequest: 100_000,
		MaxFuture:           model.Duration(DefaultMaxFuture),
		SeriesCacheBytes:    256 << 20,
	}
}

// Validate names the first bad field, in the order of the struct's fields,
// by its key relative to the section (cmd/fleetgate puts the section's path
// in front).
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"max_series_per_request", c.MaxSeriesPerRequest},
		{"series_cache_bytes", c.SeriesCacheBytes},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", f.name, f.v)
		}
	}
	if c.MaxFuture < 0 {
		return fmt.Errorf("max_future: must not be negative, got %s", c.MaxFuture)
	}
	for _, f := range []struct {
		name string
		v    *int
	}{
		{"max_labels_per_series", c.MovedMaxLabelsPerSeries},
		{"max_label_name_length", c.MovedMaxLabelNameLength},
		{"max_label_value_length", c.MovedMaxLabelValueLength},
	} {
		if f.v != nil {
			return fmt.Errorf("%s: moved to limits.%s (a default for every cluster, overridable per cluster)", f.name, f.name)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxSeriesPerRequest > 0 {
		d.MaxSeriesPerRequest = c.MaxSeriesPerRequest
	}
	if c.MaxFuture > 0 {
		d.MaxFuture = c.MaxFuture
	}
	if c.SeriesCacheBytes > 0 {
		d.SeriesCacheBytes = c.SeriesCacheBytes
	}
	return d
}

// MetadataSink keeps metric metadata (type, help, unit) per metric family.
type MetadataSink interface {
	SetMetadata(cluster, family string, m metadata.Metadata)
}

// Pipeline is shared by every receiver. It is safe for concurrent use.
type Pipeline struct {
	cfg     Config
	reg     *fleet.Registry
	sink    storage.AppendableV2
	meta    MetadataSink
	logger  *slog.Logger
	now     func() time.Time
	ha      HATracker // HA replica dedup (ingest/ha); nil: off
	refs    *refCache
	limits  *core.Limiter
	tracker *SeriesTracker // forward-only series limit; nil: off

	// bounds is ingest.max_future, the time rule logs and traces share.
	bounds core.TimeBounds

	samples    *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	commitTime prometheus.Histogram
}

// New builds a pipeline appending to sink. meta may be nil.
func New(cfg Config, reg *fleet.Registry, sink storage.AppendableV2, meta MetadataSink, r prometheus.Registerer, logger *slog.Logger) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pipeline{
		cfg: cfg.withDefaults(), reg: reg, sink: sink, meta: meta, logger: logger, now: time.Now,
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_samples_total",
			Help: "Samples, histograms and exemplars accepted into storage, by cluster and kind.",
		}, []string{"cluster", "kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_rejected_total",
			Help: "Samples, histograms and exemplars refused at ingest, by cluster and reason.",
		}, []string{"cluster", "reason"}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:                        "fleetgate_ingest_commit_duration_seconds",
			Help:                        "Time to commit one request's samples to the WAL.",
			Buckets:                     prometheus.ExponentialBuckets(0.0001, 4, 10),
			NativeHistogramBucketFactor: 1.1,
		}),
	}
	p.bounds = core.TimeBounds{MaxFuture: time.Duration(p.cfg.MaxFuture)}
	p.refs = newRefCache(p.cfg.SeriesCacheBytes)
	var err error
	if p.limits, err = core.NewLimiter(reg, r); err != nil {
		return nil, err
	}
	if r != nil {
		for _, c := range []prometheus.Collector{p.samples, p.rejected, p.commitTime} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering pipeline metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Registry is the cluster registry the pipeline stamps identity from.
func (p *Pipeline) Registry() *fleet.Registry { return p.reg }

// MaxSeriesPerRequest is the configured per-request series limit.
func (p *Pipeline) MaxSeriesPerRequest() int { return p.cfg.MaxSeriesPerRequest }

// MaxFuture is ingest.max_future: how far ahead of now data may be.
func (p *Pipeline) MaxFuture() time.Duration { return p.bounds.MaxFuture }

// Limiter enforces the per-cluster request limits for every receiver.
func (p *Pipeline) Limiter() *core.Limiter { return p.limits }

// Sample is one float sample. ST is the optional start (created) timestamp.
type Sample struct {
	ST, T int64
	V     float64
}

// HistogramSample is one native histogram sample; exactly one of H and FH is set.
type HistogramSample struct {
	ST, T int64
	H     *histogram.Histogram
	FH    *histogram.FloatHistogram
}

// Series is one decoded series of a request. Receivers reuse it between series.
type Series struct {
	Labels     labels.Labels
	Samples    []Sample
	Histograms []HistogramSample
	Exemplars  []exemplar.Exemplar
	// Metadata, when Type is set, is recorded for the series' metric family.
	Metadata metadata.Metadata

	// ID, when set, identifies the series as the receiver decoded it (its
	// encoded labels and metadata): equal IDs from one cluster must mean
	// equal Labels and Metadata. The series cache is keyed on it, and a known
	// series then needs neither Labels nor a metadata update: the receiver
	// may leave Labels empty and set Source to build them when needed.
	ID     []byte
	Source LabelSource
}

// LabelSource builds a series' labels on demand. The labels may point into
// reused memory: the pipeline copies what it keeps.
type LabelSource interface {
	SeriesLabels() labels.Labels
}

// labels returns s.Labels, built from s.Source if not set yet.
func (s *Series) labels() labels.Labels {
	if s.Labels.IsEmpty() && s.Source != nil {
		s.Labels = s.Source.SeriesLabels()
	}
	return s.Labels
}

// Reset empties s for reuse, keeping capacity.
func (s *Series) Reset() {
	s.Labels = labels.EmptyLabels()
	s.Samples = s.Samples[:0]
	s.Histograms = s.Histograms[:0]
	s.Exemplars = s.Exemplars[:0]
	s.Metadata = metadata.Metadata{}
	s.ID, s.Source = nil, nil
}

// Written counts what a batch committed.
type Written struct {
	Series, Samples, Histograms, Exemplars int
}

type clusterCount struct {
	c *fleet.Cluster
	Written
}

// Batch is one request's data from one sender. Identity conflicts abort the
// whole batch; invalid series and samples are skipped and reported, the rest
// are committed, as Prometheus's own remote-write receiver does.
type Batch struct {
	p       *Pipeline
	ctx     context.Context
	cluster *fleet.Cluster // nil: dev mode, identity from the data
	app     storage.AppenderV2
	sb      labels.ScratchBuilder
	counts  []clusterCount
	bad     core.Problems
	badN    int
	fatal   error
	series  int
	maxT    int64 // ms: later samples are too far in the future
	// internal batches (derived metrics) are not the cluster's own writes:
	// they do not make it fresh.
	internal bool

	stamps   [][2]string // b.cluster's stamp labels, sorted
	stampKey string      // what stamping does for cluster, part of the series cache key
	keyBuf   []byte

	// Exemplars (exemplars.go).
	exBuf           []exemplar.Exemplar
	oooExemplars    int
	oooExemplarErrs []error
}

// Begin starts a batch for cluster c (nil in dev mode without a claimed cluster).
func (p *Pipeline) Begin(ctx context.Context, c *fleet.Cluster) *Batch {
	b := &Batch{p: p, ctx: ctx, cluster: c, app: p.sink.AppenderV2(ctx), sb: labels.NewScratchBuilder(16),
		maxT: p.bounds.LatestMillis(p.now())}
	if c != nil {
		b.stamps = c.StampLabels()
	}
	b.stampKey = stampKey(b.stamps, c == nil)
	return b
}

// BeginInternal starts a batch of data fleetgate derives for cluster c (log
// and span metrics): validated and stored like the cluster's own, but not
// counted as a write of the cluster, so it does not keep it fresh.
func (p *Pipeline) BeginInternal(ctx context.Context, c *fleet.Cluster) *Batch {
	b := p.Begin(ctx, c)
	b.internal = true
	return b
}

func (b *Batch) count(c *fleet.Cluster) *Written {
	for i := range b.counts {
		if b.counts[i].c == c {
			return &b.counts[i].Written
		}
	}
	b.counts = append(b.counts, clusterCount{c: c})
	return &b.counts[len(b.counts)-1].Written
}

func (b *Batch) reject(c *fleet.Cluster, reason string, n int, err error) {
	name := "unknown"
	if c != nil {
		name = c.Name
		c.Rejected(reason, n, err.Error())
	}
	b.p.rejected.WithLabelValues(name, reason).Add(float64(n))
	b.badN += n
	b.bad.Add(err)
}

// Fatal is the identity error that aborted the batch, if any.
func (b *Batch) Fatal() error { return b.fatal }

// stamp validates s.Labels and returns them with the cluster identity
// stamped (identity, conflict rule, label limits and stamping: ingest/core).
func (b *Batch) stamp(ls labels.Labels) (labels.Labels, *fleet.Cluster, *core.Error) {
	c, perr := core.Resolve(b.p.reg, b.cluster, ls.Get(fleet.ClusterLabel))
	if perr != nil {
		return ls, nil, perr
	}
	if ls.Len() == 0 || ls.Get(model.MetricNameLabel) == "" {
		return ls, c, &core.Error{Status: http.StatusBadRequest, Reason: "invalid_labels", Msg: fmt.Sprintf("series %s has no metric name", core.Abbrev(ls))}
	}
	lim := c.Limits()
	if lim.MaxLabelsPerSeries > 0 && ls.Len() > lim.MaxLabelsPerSeries {
		return ls, c, core.CheckLabelLimits(lim, "series", ls)
	}
	if !ls.IsValid(model.UTF8Validation) {
		return ls, c, &core.Error{Status: http.StatusBadRequest, Reason: "invalid_labels", Msg: fmt.Sprintf("series %s has an invalid label name or value", core.Abbrev(ls))}
	}
	if dup, ok := ls.HasDuplicateLabelNames(); ok {
		return ls, c, &core.Error{Status: http.StatusBadRequest, Reason: "invalid_labels", Msg: fmt.Sprintf("series %s has duplicate label %.64q", core.Abbrev(ls), dup)}
	}
	if lerr := core.CheckLabelLimits(lim, "series", ls); lerr != nil {
		return ls, c, lerr
	}
	if claimed := ls.Get(fleet.ClusterLabel); core.Refused(b.p.reg, c, claimed) {
		return ls, c, core.ConflictError("series "+core.Abbrev(ls), claimed, c)
	}
	stamp := b.stamps
	if c != b.cluster || stamp == nil {
		stamp = c.StampLabels()
	}
	return core.Stamp(&b.sb, ls, stamp), c, nil
}

func classify(err error) (string, bool) {
	switch {
	case errors.Is(err, storage.ErrOutOfOrderSample):
		return "out_of_order", true
	case errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrTooOldSample):
		return "too_old", true
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return "duplicate", true
	case errors.As(err, new(histogram.Error)), errors.Is(err, storage.ErrNativeHistogramsDisabled):
		// Every validation error of a native histogram (histogram.Error),
		// as Prometheus's receiver classifies them: the sender's fault.
		return "invalid_histogram", true
	case errors.Is(err, ErrSeriesLimit):
		return "series_limit", true
	}
	return "", false
}

// Add appends one series. It returns an error only when the batch must stop:
// an identity conflict (the batch is aborted), a limit, or a storage failure.
// Invalid series and samples are counted and reported by Commit.
func (b *Batch) Add(s *Series) error {
	if b.fatal != nil {
		return b.fatal
	}
	b.series++
	if b.series > b.p.cfg.MaxSeriesPerRequest {
		b.fatal = &core.Error{Status: http.StatusRequestEntityTooLarge, Reason: "limit",
			Msg: fmt.Sprintf("request has more than %d series (ingest.max_series_per_request)", b.p.cfg.MaxSeriesPerRequest)}
		b.abort()
		return b.fatal
	}
	n := len(s.Samples) + len(s.Histograms)
	// A series seen before was validated and stamped then: the cache gives
	// its storage reference, and ls stays empty so that a stale reference
	// fails the append instead of creating an unstamped series.
	var (
		ls     labels.Labels
		c      *fleet.Cluster
		perr   *core.Error
		ref    storage.SeriesRef
		key    refKey
		cached bool
	)
	// Series of an HA pair skip the cache: whether they are kept depends on
	// the election at the time of each request, and the tracker needs labels.
	if rc := b.p.refs; rc != nil && n > 0 && !(b.p.ha != nil && b.p.ha.Tracks(s.labels())) {
		id := s.ID
		if id == nil {
			b.keyBuf = s.labels().Bytes(b.keyBuf[:0])
			id = b.keyBuf
		}
		key = rc.key(b.stampKey, id)
		if ref = rc.get(&key); ref != 0 {
			cached = true
			if c = b.cluster; c == nil {
				c = b.p.reg.Dev(s.labels().Get(fleet.ClusterLabel))
			}
		}
	}
	if !cached {
		ls, c, perr = b.stamp(s.labels())
	}
	if perr != nil {
		if perr.Reason == "conflict" || perr.Status == http.StatusUnauthorized {
			b.reject(c, perr.Reason, n, perr)
			b.fatal = perr
			b.abort()
			return perr
		}
		b.reject(c, perr.Reason, n, perr)
		return nil
	}
	if dropped := b.dropFuture(c, s, ls); dropped > 0 {
		if n -= dropped; n == 0 {
			// Exemplars still go to the series, as when storage refuses
			// its samples (appendExemplars drops far-future ones).
			return b.appendExemplars(c, ref, ls, s, b.count(c))
		}
	}
	keep, backfill := true, []HABackfill(nil)
	if b.p.ha != nil {
		ls, keep, backfill = b.p.ha.Accept(c, ls, s)
	}
	if !keep {
		return nil // a non-elected HA replica: dropped, counted by the tracker
	}
	if len(backfill) > 0 {
		if err := b.backfill(c, backfill); err != nil {
			return err
		}
	}
	if n == 0 {
		if len(s.Exemplars) > 0 {
			// Remote-write 1.0 senders send exemplars as series of their own.
			return b.appendExemplars(c, 0, ls, s, b.count(c))
		}
		b.reject(c, "empty_series", 0, &core.Error{Status: http.StatusBadRequest, Reason: "empty_series", Msg: fmt.Sprintf("series %s has no samples", core.Abbrev(s.labels()))})
		return nil
	}
	if b.p.tracker != nil {
		// Forward-only mode: the series limit without a storage hook. The
		// key is the series cache's (a series as its cluster sends it), or
		// the stamped labels' hash for series that skip the cache.
		k := binary.LittleEndian.Uint64(key[:8])
		if key == (refKey{}) {
			k = ls.Hash() // not cached, so stamped above
		}
		if err := b.p.tracker.admit(c, k); err != nil {
			b.reject(c, "series_limit", n, fmt.Errorf("series %s: %w", core.Abbrev(s.labels()), err))
			return nil
		}
	}
	w := b.count(c)
	w.Series++
	// A series known by ID has the metadata it had when it was cached.
	if s.Metadata.Type != "" && b.p.meta != nil && !(cached && s.ID != nil) {
		b.p.meta.SetMetadata(c.Name, s.labels().Get(model.MetricNameLabel), s.Metadata)
	}
	opts := storage.AOptions{}
	for i := range s.Samples {
		sm := &s.Samples[i]
		r, err := b.app.Append(ref, ls, sm.ST, sm.T, sm.V, nil, nil, opts)
		if cached && retryUncached(err) {
			// The reference may be stale: stamp and append again by labels.
			cached, ref = false, 0
			if ls, perr = b.uncache(&key, s.labels()); perr != nil {
				b.reject(c, perr.Reason, n, perr)
				return nil
			}
			r, err = b.app.Append(ref, ls, sm.ST, sm.T, sm.V, nil, nil, opts)
		}
		if err := b.appendErr(c, s, ls, sm.T, err); err != nil {
			return err
		}
		if r != 0 && r != ref {
			ref = r
			if b.p.refs != nil {
				b.p.refs.set(&key, r)
			}
		}
		if err == nil || errors.Is(err, (*storage.AppendPartialError)(nil)) {
			w.Samples++
		}
	}
	for i := range s.Histograms {
		hs := &s.Histograms[i]
		r, err := b.app.Append(ref, ls, hs.ST, hs.T, 0, hs.H, hs.FH, opts)
		if cached && retryUncached(err) {
			// The reference may be stale: stamp and append again by labels.
			cached, ref = false, 0
			if ls, perr = b.uncache(&key, s.labels()); perr != nil {
				b.reject(c, perr.Reason, n, perr)
				return nil
			}
			r, err = b.app.Append(ref, ls, hs.ST, hs.T, 0, hs.H, hs.FH, opts)
		}
		if err := b.appendErr(c, s, ls, hs.T, err); err != nil {
			return err
		}
		if r != 0 && r != ref {
			ref = r
			if b.p.refs != nil {
				b.p.refs.set(&key, r)
			}
		}
		if err == nil || errors.Is(err, (*storage.AppendPartialError)(nil)) {
			w.Histograms++
		}
	}
	return b.appendExemplars(c, ref, ls, s, w)
}

// dropFuture removes from s the samples and histograms more than
// ingest.max_future ahead of the batch's start (b.maxT, from the time bounds
// of ingest/core that logs and traces share), rejecting them as
// too_far_in_future, and returns how many it removed. Far-future exemplars
// are left to appendExemplars, which drops them without failing the request
// as Prometheus's receiver does. A series without such data costs one
// comparison per sample. ls are the stamped labels, empty for a cached series
// (then the message names the series as sent).
func (b *Batch) dropFuture(c *fleet.Cluster, s *Series, ls labels.Labels) int {
	// The check every series pays, in plain loops: the generic removal's
	// time function is an indirect call per element (3× slower here).
	bad := 0
	for i := range s.Samples {
		if s.Samples[i].T > b.maxT {
			bad++
		}
	}
	for i := range s.Histograms {
		if s.Histograms[i].T > b.maxT {
			bad++
		}
	}
	if bad == 0 {
		return 0
	}
	first := int64(math.MaxInt64)
	s.Samples = dropAfter(s.Samples, b.maxT, &first, func(sm *Sample) int64 { return sm.T })
	s.Histograms = dropAfter(s.Histograms, b.maxT, &first, func(h *HistogramSample) int64 { return h.T })
	if ls.IsEmpty() {
		ls = s.labels()
	}
	b.reject(c, core.ReasonTooFarInFuture, bad, &core.Error{Status: http.StatusBadRequest, Reason: core.ReasonTooFarInFuture,
		Msg: fmt.Sprintf("series %s: %d samples from %s on are more than %s ahead of now", core.Abbrev(ls), bad,
			formatMillis(first), b.p.bounds.FutureBound())})
	return bad
}

// dropAfter removes, in place, the elements of xs whose time t is after
// maxT, lowers first to the earliest of them, and returns what is left.
func dropAfter[T any](xs []T, maxT int64, first *int64, t func(*T) int64) []T {
	keep := xs[:0]
	for i := range xs {
		if ti := t(&xs[i]); ti > maxT {
			*first = min(*first, ti)
			continue
		}
		keep = append(keep, xs[i])
	}
	return keep
}

// formatMillis formats a millisecond timestamp, also one out of time.Time's range.
func formatMillis(t int64) string {
	const maxSeconds = 253402300799 // 9999-12-31T23:59:59Z
	if t/1000 > maxSeconds || t/1000 < -maxSeconds {
		return fmt.Sprintf("%d ms since the epoch", t)
	}
	return time.UnixMilli(t).UTC().Format(time.RFC3339Nano)
}

// backfill appends the standby samples an HA takeover returned. Samples the
// storage refuses (out of order, duplicate, ...) are counted by the tracker,
// not reported: they do not fail the request.
func (b *Batch) backfill(c *fleet.Cluster, bf []HABackfill) error {
	w := b.count(c)
	ok := 0
	var refused map[string]int
	for i := range bf {
		sm := &bf[i].Sample
		_, err := b.app.Append(0, bf[i].Labels, sm.ST, sm.T, sm.V, nil, nil, storage.AOptions{})
		if err == nil {
			ok++
			continue
		}
		reason, known := classify(err)
		if !known {
			b.fatal = fmt.Errorf("appending HA backfill of series %s: %w", core.Abbrev(bf[i].Labels), err)
			b.abort()
			return b.fatal
		}
		if refused == nil {
			refused = map[string]int{}
		}
		refused[reason]++
	}
	w.Samples += ok
	b.p.ha.Backfilled(c, ok, refused)
	return nil
}

// uncache forgets a cached series and stamps it the full way.
func (b *Batch) uncache(key *refKey, sent labels.Labels) (labels.Labels, *core.Error) {
	b.p.refs.del(key)
	ls, _, perr := b.stamp(sent)
	return ls, perr
}

// retryUncached tells whether a failed append of a cached series must be
// retried by labels: any failure but a partial one (the sample was appended,
// some exemplars were not).
func retryUncached(err error) bool {
	return err != nil && !errors.Is(err, (*storage.AppendPartialError)(nil))
}

// appendErr sorts an append error into reported (nil returned) or fatal.
// ls is empty for a cached series: messages then name the series as sent.
func (b *Batch) appendErr(c *fleet.Cluster, s *Series, ls labels.Labels, t int64, err error) error {
	name := func() string {
		if ls.IsEmpty() {
			return core.Abbrev(s.labels())
		}
		return core.Abbrev(ls)
	}
	if err == nil {
		return nil
	}
	if reason, ok := classify(err); ok {
		b.reject(c, reason, 1, fmt.Errorf("series %s at %s: %w", name(), formatMillis(t), err))
		return nil
	}
	b.fatal = fmt.Errorf("appending series %s: %w", name(), err)
	b.abort()
	return b.fatal
}

func (b *Batch) abort() {
	if b.app != nil {
		if err := b.app.Rollback(); err != nil {
			b.p.logger.Warn("rollback failed", "err", err)
		}
		b.app = nil
	}
}

// Abort discards everything appended in the batch.
func (b *Batch) Abort() { b.abort() }

// Commit makes the batch durable in the WAL. It returns what was written;
// err is an *core.Error with status 400 when some series or samples were rejected
// (the rest are committed), or a storage failure.
func (b *Batch) Commit() (Written, error) {
	if b.fatal != nil {
		return Written{}, b.fatal
	}
	start := time.Now()
	if err := b.app.Commit(); err != nil {
		b.app = nil
		return Written{}, fmt.Errorf("committing to storage: %w", err)
	}
	b.app = nil
	b.p.commitTime.Observe(time.Since(start).Seconds())
	now := b.p.now()
	var total Written
	for _, cc := range b.counts {
		// Only a write that stored something makes the cluster fresh.
		if !b.internal && cc.Samples+cc.Histograms > 0 {
			cc.c.Written(now, cc.Series, cc.Samples, cc.Histograms, cc.Exemplars)
		}
		b.p.samples.WithLabelValues(cc.c.Name, "sample").Add(float64(cc.Samples))
		if cc.Histograms > 0 {
			b.p.samples.WithLabelValues(cc.c.Name, "histogram").Add(float64(cc.Histograms))
		}
		if cc.Exemplars > 0 {
			b.p.samples.WithLabelValues(cc.c.Name, "exemplar").Add(float64(cc.Exemplars))
		}
		total.Series += cc.Series
		total.Samples += cc.Samples
		total.Histograms += cc.Histograms
		total.Exemplars += cc.Exemplars
	}
	if b.bad.Len() > 0 {
		msg := fmt.Sprintf("%d samples rejected: %v", b.badN, b.bad.Err())
		return total, &core.Error{Status: http.StatusBadRequest, Reason: "rejected", Msg: msg}
	}
	return total, nil
}

// MetadataSink is where metric metadata goes, or nil.
func (p *Pipeline) MetadataSink() MetadataSink { return p.meta }

// Rejected is the number of samples rejected so far (reported by Commit).
func (b *Batch) Rejected() int { return b.badN }

// HATracker deduplicates the series of Prometheus HA pairs (ingest/ha's
// Tracker): it decides, per series that carries a replica label, whether
// the batch keeps it.
type HATracker interface {
	// Tracks reports whether Accept decides about ls (it carries a replica
	// label); such series skip the series cache.
	Tracks(ls labels.Labels) bool
	// Accept decides whether a stamped series of cluster c is kept, and
	// returns its labels as stored (without the replica label unless
	// configured) and, when the call elected a new replica, that replica's
	// buffered samples to append first.
	Accept(c *fleet.Cluster, ls labels.Labels, s *Series) (labels.Labels, bool, []HABackfill)
	// Backfilled counts the outcome of appending a takeover's backfill.
	Backfilled(c *fleet.Cluster, ok int, refused map[string]int)
}

// HABackfill is one buffered standby sample to append on failover.
type HABackfill struct {
	Labels labels.Labels // as Accept returns them
	Sample Sample
}

// SetHATracker makes the pipeline deduplicate HA replicas with t (nil: off).
func (p *Pipeline) SetHATracker(t HATracker) { p.ha = t }
