// Package federation is fleetgate's federated storage.Queryable: the
// embedded TSDB merged with every cluster's remote query source (remote-read
// or a Prometheus-compatible HTTP API), with health probes, pruning by the
// clusters' identity labels, partial responses and HA replica dedup
// (dedup.go). It is storage: it reads, never serves HTTP.
package federation

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/fleetgate/fleetgate/fleet"
)

// RequestOptions are the Thanos query parameters of one request; they travel
// from the HTTP layer to the federated querier in the request context.
type RequestOptions struct {
	// PartialResponse nil means the default: allowed, except for sources
	// configured as required.
	PartialResponse *bool
	// Dedup nil means the Thanos default (true).
	Dedup *bool
	// ReplicaLabels overrides the sources' configured replica labels when set.
	ReplicaLabels []string
}

type requestOptionsKey struct{}

// WithRequestOptions returns ctx carrying o.
func WithRequestOptions(ctx context.Context, o RequestOptions) context.Context {
	return context.WithValue(ctx, requestOptionsKey{}, o)
}

func requestOptions(ctx context.Context) RequestOptions {
	o, _ := ctx.Value(requestOptionsKey{}).(RequestOptions)
	return o
}

// fetched is one series read from a source, held in memory.
type fetched struct {
	lset    labels.Labels
	samples []chunks.Sample
}

// fetcher speaks one remote protocol.
type fetcher interface {
	// fetch reads raw samples in [mint, maxt] of the series matching ms.
	fetch(ctx context.Context, mint, maxt int64, hints *storage.SelectHints, ms []*labels.Matcher) ([]fetched, annotations.Annotations, error)
	labelNames(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]string, annotations.Annotations, error)
	labelValues(ctx context.Context, name string, mint, maxt int64, ms []*labels.Matcher) ([]string, annotations.Annotations, error)
	probe(ctx context.Context) error
}

// Source is one remote cluster read at query time.
type Source struct {
	name          string
	stamp         labels.Labels
	required      bool
	timeout       time.Duration
	probeInterval time.Duration
	replicaLabels []string
	f             fetcher
	logger        *slog.Logger
	m             *SourceMetrics

	mu        sync.Mutex
	down      bool
	downErr   error
	downSince time.Time
}

// SourceStatus is what /api/v1/sources shows of a source.
type SourceStatus struct {
	Cluster   string    `json:"cluster"`
	Up        bool      `json:"up"`
	DownSince time.Time `json:"downSince,omitzero"`
	LastError string    `json:"lastError,omitempty"`
	Required  bool      `json:"required"`
}

// SourceMetrics are shared by every source; register once.
type SourceMetrics struct {
	up       *prometheus.GaugeVec
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewSourceMetrics builds (and registers on r, when not nil) the query source metrics.
func NewSourceMetrics(r prometheus.Registerer) (*SourceMetrics, error) {
	m := &SourceMetrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetgate_query_source_up",
			Help: "1 when the remote query source of a cluster answers its health probe.",
		}, []string{"cluster"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_query_source_requests_total",
			Help: "Requests to remote query sources by cluster and result (ok, error, skipped_down, pruned).",
		}, []string{"cluster", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetgate_query_source_request_duration_seconds",
			Help:    "Duration of requests to remote query sources.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"cluster"}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.up, m.requests, m.duration} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering query source metrics: %w", err)
			}
		}
	}
	return m, nil
}

// NewSource builds the query source of cluster name from its endpoint config;
// stamp are the identity labels put on every series it returns (the
// cluster's `cluster`, region, zone and extra labels).
func NewSource(name string, stamp labels.Labels, ep fleet.QueryEndpoint, m *SourceMetrics, logger *slog.Logger) (*Source, error) {
	prefix := fmt.Sprintf("clusters (%s).query", name)
	if err := ep.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	client, err := newHTTPClient(ep)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	var f fetcher
	switch ep.Type {
	case "", fleet.QueryRemoteRead:
		f, err = newRemoteReadFetcher(name, ep, client)
	case fleet.QueryPrometheus:
		f, err = newPromAPIFetcher(ep, client)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	if m == nil {
		if m, err = NewSourceMetrics(nil); err != nil {
			return nil, err
		}
	}
	s := &Source{
		name: name, stamp: stamp, required: ep.Required, timeout: ep.TimeoutOrDefault(),
		probeInterval: ep.ProbeIntervalOrDefault(), replicaLabels: ep.ReplicaLabels,
		f: f, logger: logger.With("component", "query source", "cluster", name), m: m,
	}
	m.up.WithLabelValues(name).Set(1)
	return s, nil
}

// Status reports the source's health.
func (s *Source) Status() SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SourceStatus{Cluster: s.name, Up: !s.down, Required: s.required}
	if s.down {
		st.DownSince = s.downSince
		st.LastError = s.downErr.Error()
	}
	return st
}

func (s *Source) downError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return nil
	}
	return fmt.Errorf("source marked down by its health probe since %s: %w", s.downSince.UTC().Format(time.RFC3339), s.downErr)
}

// Probe checks the source once and marks it up or down.
func (s *Source) Probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := s.f.probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: the answer says nothing about the source
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && !s.down:
		s.down, s.downErr, s.downSince = true, err, time.Now()
		s.logger.Warn("query source is down; queries skip it until it answers again", "err", err)
		s.m.up.WithLabelValues(s.name).Set(0)
	case err != nil:
		s.downErr = err
	case s.down:
		s.down, s.downErr = false, nil
		s.logger.Info("query source is up again")
		s.m.up.WithLabelValues(s.name).Set(1)
	}
}

// run probes the source every probe interval until ctx ends.
func (s *Source) run(ctx context.Context) {
	t := time.NewTicker(s.probeInterval)
	defer t.Stop()
	s.Probe(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Probe(ctx)
		}
	}
}

// prune strips the matchers on the source's identity labels: it returns
// false when they cannot match the source (the source is not asked at all).
func (s *Source) prune(ms []*labels.Matcher) ([]*labels.Matcher, bool) {
	rest := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if v := s.stamp.Get(m.Name); v != "" || s.stamp.Has(m.Name) {
			if !m.Matches(v) {
				return nil, false
			}
			continue
		}
		if m.Name == fleet.ClusterLabel && s.stamp.Len() > 0 {
			// The source's series always carry the stamp; a `cluster`
			// matcher not in the stamp cannot happen (stamp holds cluster).
			if !m.Matches(s.name) {
				return nil, false
			}
			continue
		}
		rest = append(rest, m)
	}
	return rest, true
}

// strict says whether a failure of this source must fail the query.
func (s *Source) strict(o RequestOptions) bool {
	return s.required || (o.PartialResponse != nil && !*o.PartialResponse)
}

// failure turns a source error into a warning or, when strict, an error; both name the cluster.
func (s *Source) failure(o RequestOptions, err error) error {
	if s.strict(o) {
		return fmt.Errorf("cluster %q: %w", s.name, err)
	}
	return fmt.Errorf("cluster %q is missing from the answer (partial response): %w", s.name, err)
}

func (s *Source) replicaLabelsFor(o RequestOptions) []string {
	if o.Dedup != nil && !*o.Dedup {
		return nil
	}
	if len(o.ReplicaLabels) > 0 {
		return o.ReplicaLabels
	}
	return s.replicaLabels
}

// Queryable is the federated storage.SampleAndChunkQueryable: the embedded
// TSDB (may be nil) merged with every remote source.
type Queryable struct {
	local   storage.SampleAndChunkQueryable
	sources []*Source
}

// New merges local with sources.
func New(local storage.SampleAndChunkQueryable, sources []*Source) *Queryable {
	return &Queryable{local: local, sources: sources}
}

// Sources are the remote sources.
func (f *Queryable) Sources() []*Source { return f.sources }

// Run probes every source until ctx ends; it returns when all probes stopped.
func (f *Queryable) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range f.sources {
		wg.Go(func() { s.run(ctx) })
	}
	wg.Wait()
}

// Querier implements storage.Queryable with Prometheus's merge querier.
func (f *Queryable) Querier(mint, maxt int64) (storage.Querier, error) {
	qs := make([]storage.Querier, 0, len(f.sources)+1)
	if f.local != nil {
		lq, err := f.local.Querier(mint, maxt)
		if err != nil {
			return nil, err
		}
		qs = append(qs, lq)
	}
	for _, s := range f.sources {
		qs = append(qs, &sourceQuerier{s: s, mint: mint, maxt: maxt})
	}
	return storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge), nil
}

// ChunkQuerier implements storage.ChunkQueryable (fleetgate's own remote-read endpoint).
func (f *Queryable) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	if len(f.sources) == 0 && f.local != nil {
		return f.local.ChunkQuerier(mint, maxt)
	}
	q, err := f.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return chunkQuerier{q}, nil
}

type chunkQuerier struct{ storage.Querier }

func (c chunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	return storage.NewSeriesSetToChunkSet(c.Querier.Select(ctx, sortSeries, hints, ms...))
}

// sourceQuerier reads one source. Select starts the remote request in a
// goroutine (so the merge querier's sequential Selects fan out in parallel)
// and the series set waits for it; Close waits for every request.
type sourceQuerier struct {
	s          *Source
	mint, maxt int64
	wg         sync.WaitGroup
}

type fetchResult struct {
	series []fetched
	ws     annotations.Annotations
	err    error
}

func (q *sourceQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	s := q.s
	rest, ok := s.prune(ms)
	if !ok {
		s.m.requests.WithLabelValues(s.name, "pruned").Inc()
		return storage.EmptySeriesSet()
	}
	o := requestOptions(ctx)
	if err := s.downError(); err != nil {
		s.m.requests.WithLabelValues(s.name, "skipped_down").Inc()
		return q.failed(o, err)
	}
	mint, maxt := q.mint, q.maxt
	if hints != nil {
		mint, maxt = max(mint, hints.Start), min(maxt, hints.End)
		if hints.Start == 0 && hints.End == 0 {
			mint, maxt = q.mint, q.maxt
		}
	}
	ch := make(chan fetchResult, 1)
	q.wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		start := time.Now()
		series, ws, err := s.f.fetch(ctx, mint, maxt, hints, rest)
		s.m.duration.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
		if err == nil {
			series, err = s.finish(series, s.replicaLabelsFor(o))
		}
		if err != nil {
			s.m.requests.WithLabelValues(s.name, "error").Inc()
		} else {
			s.m.requests.WithLabelValues(s.name, "ok").Inc()
		}
		ch <- fetchResult{series, ws, err}
	})
	return &asyncSeriesSet{ch: ch, onErr: func(err error) storage.SeriesSet { return q.failed(o, err) }}
}

func (q *sourceQuerier) failed(o RequestOptions, err error) storage.SeriesSet {
	err = q.s.failure(o, err)
	if q.s.strict(o) {
		return storage.ErrSeriesSet(err)
	}
	return &listSeriesSet{ws: annotations.New().Add(err)}
}

func (q *sourceQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	s := q.s
	rest, ok := s.prune(ms)
	if !ok {
		return nil, nil, nil
	}
	o := requestOptions(ctx)
	if s.stamp.Has(name) {
		// The stamp's value, if the source holds any series matching.
		if len(rest) > 0 {
			names, ws, err := q.labelCall(ctx, o, func(ctx context.Context) ([]string, annotations.Annotations, error) {
				return s.f.labelNames(ctx, q.mint, q.maxt, rest)
			})
			if err != nil || len(names) == 0 {
				return nil, ws, err
			}
			return []string{s.stamp.Get(name)}, ws, nil
		}
		return []string{s.stamp.Get(name)}, nil, nil
	}
	vals, ws, err := q.labelCall(ctx, o, func(ctx context.Context) ([]string, annotations.Annotations, error) {
		return s.f.labelValues(ctx, name, q.mint, q.maxt, rest)
	})
	if len(vals) > 0 && slices.Contains(s.replicaLabelsFor(o), name) {
		vals = nil
	}
	return truncate(vals, hints), ws, err
}

func (q *sourceQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	s := q.s
	rest, ok := s.prune(ms)
	if !ok {
		return nil, nil, nil
	}
	o := requestOptions(ctx)
	names, ws, err := q.labelCall(ctx, o, func(ctx context.Context) ([]string, annotations.Annotations, error) {
		return s.f.labelNames(ctx, q.mint, q.maxt, rest)
	})
	if err != nil {
		return nil, ws, err
	}
	if len(names) == 0 && len(rest) > 0 {
		return nil, ws, nil
	}
	drop := s.replicaLabelsFor(o)
	out := names[:0]
	for _, n := range names {
		if !slices.Contains(drop, n) && !s.stamp.Has(n) {
			out = append(out, n)
		}
	}
	s.stamp.Range(func(l labels.Label) { out = append(out, l.Name) })
	sort.Strings(out)
	return truncate(out, hints), ws, nil
}

func truncate(s []string, hints *storage.LabelHints) []string {
	if hints != nil && hints.Limit > 0 && len(s) > hints.Limit {
		return s[:hints.Limit]
	}
	return s
}

// labelCall runs a label request with the source's timeout and partial-response rules.
func (q *sourceQuerier) labelCall(ctx context.Context, o RequestOptions, call func(context.Context) ([]string, annotations.Annotations, error)) ([]string, annotations.Annotations, error) {
	s := q.s
	err := s.downError()
	var vals []string
	var ws annotations.Annotations
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		vals, ws, err = call(cctx)
		cancel()
	}
	if err != nil {
		err = s.failure(o, err)
		if s.strict(o) {
			return nil, ws, err
		}
		ws = ws.Add(err)
		return nil, ws, nil
	}
	return vals, ws, nil
}

func (q *sourceQuerier) Close() error {
	q.wg.Wait()
	return nil
}

// finish deduplicates replicas, stamps the cluster identity and sorts.
func (s *Source) finish(series []fetched, replicaLabels []string) ([]fetched, error) {
	if len(replicaLabels) > 0 {
		series = dedupReplicas(series, replicaLabels)
	}
	if s.stamp.Len() > 0 {
		b := labels.NewBuilder(labels.EmptyLabels())
		for i := range series {
			b.Reset(series[i].lset)
			s.stamp.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
			series[i].lset = b.Labels()
		}
	}
	sort.Slice(series, func(i, j int) bool { return labels.Compare(series[i].lset, series[j].lset) < 0 })
	// Two remote series may have become one after stamping (e.g. the
	// remote already carried a different `cluster`): merge them.
	out := series[:0]
	for _, f := range series {
		if n := len(out); n > 0 && labels.Equal(out[n-1].lset, f.lset) {
			out[n-1].samples = dedupPair(out[n-1].samples, f.samples)
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// asyncSeriesSet waits for a source's answer on first use.
type asyncSeriesSet struct {
	ch    chan fetchResult
	onErr func(error) storage.SeriesSet
	inner storage.SeriesSet
}

func (a *asyncSeriesSet) wait() storage.SeriesSet {
	if a.inner == nil {
		r := <-a.ch
		if r.err != nil {
			a.inner = a.onErr(r.err)
			if r.ws != nil {
				a.inner = withWarnings{a.inner, r.ws}
			}
		} else {
			a.inner = &listSeriesSet{series: r.series, i: -1, ws: r.ws}
		}
	}
	return a.inner
}

func (a *asyncSeriesSet) Next() bool                        { return a.wait().Next() }
func (a *asyncSeriesSet) At() storage.Series                { return a.wait().At() }
func (a *asyncSeriesSet) Err() error                        { return a.wait().Err() }
func (a *asyncSeriesSet) Warnings() annotations.Annotations { return a.wait().Warnings() }

type withWarnings struct {
	storage.SeriesSet
	ws annotations.Annotations
}

func (w withWarnings) Warnings() annotations.Annotations {
	ws := annotations.New().Merge(w.SeriesSet.Warnings())
	return ws.Merge(w.ws)
}

// listSeriesSet iterates fetched series.
type listSeriesSet struct {
	series []fetched
	i      int
	ws     annotations.Annotations
}

func (l *listSeriesSet) Next() bool {
	if l.i < len(l.series) {
		l.i++
	}
	return l.i >= 0 && l.i < len(l.series)
}

func (l *listSeriesSet) At() storage.Series {
	f := l.series[l.i]
	return storage.NewListSeries(f.lset, f.samples)
}
func (l *listSeriesSet) Err() error                        { return nil }
func (l *listSeriesSet) Warnings() annotations.Annotations { return l.ws }

// sample is one fetched sample.
type sample struct {
	st int64
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return s.st }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return s.h }
func (s sample) FH() *histogram.FloatHistogram { return s.fh }
func (s sample) Type() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

func (s sample) Copy() chunks.Sample {
	c := s
	if s.h != nil {
		c.h = s.h.Copy()
	}
	if s.fh != nil {
		c.fh = s.fh.Copy()
	}
	return c
}

// readSeriesSet copies a series set into memory.
func readSeriesSet(ss storage.SeriesSet) ([]fetched, annotations.Annotations, error) {
	var out []fetched
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		f := fetched{lset: s.Labels()}
		var vals []sample
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				t, v := it.At()
				vals = append(vals, sample{st: it.AtST(), t: t, f: v})
			case chunkenc.ValHistogram:
				t, h := it.AtHistogram(nil)
				vals = append(vals, sample{st: it.AtST(), t: t, h: h})
			case chunkenc.ValFloatHistogram:
				t, h := it.AtFloatHistogram(nil)
				vals = append(vals, sample{st: it.AtST(), t: t, fh: h})
			}
		}
		if err := it.Err(); err != nil {
			return nil, ss.Warnings(), err
		}
		f.samples = boxSamples(vals)
		out = append(out, f)
	}
	return out, ss.Warnings(), ss.Err()
}

// boxSamples exposes vals as chunks.Sample through pointers into vals, so
// that turning a sample into an interface value costs no heap allocation
// per sample (a struct stored in an interface is boxed; a pointer is not).
func boxSamples(vals []sample) []chunks.Sample {
	out := make([]chunks.Sample, len(vals))
	for i := range vals {
		out[i] = &vals[i]
	}
	return out
}

func matchersString(ms []*labels.Matcher) string {
	parts := make([]string, 0, len(ms)+1)
	nonEmpty := false
	for _, m := range ms {
		parts = append(parts, m.String())
		if !m.Matches("") {
			nonEmpty = true
		}
	}
	if !nonEmpty {
		// PromQL needs one matcher that does not match the empty string.
		parts = append(parts, `__name__=~".+"`)
	}
	return "{" + strings.Join(parts, ",") + "}"
}
