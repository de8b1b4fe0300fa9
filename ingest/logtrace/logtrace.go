// Package logtrace carries logs and traces from their receivers (Loki push,
// OTLP) to their sinks (the embedded stores, the forwarders): it stamps the
// cluster identity on every log stream and every OTLP resource, applies the
// per-cluster log rate limit, fans out to the sinks, and derives metrics
// (log lines and bytes, span RED metrics) that it writes through the metrics
// pipeline into the TSDB.
package logtrace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// LogsSink receives identity-stamped log streams. Labels of each stream are
// in Loki's `{name="value", ...}` form and include the cluster label.
// A nil error means the streams are durable (or durably queued).
type LogsSink interface {
	PushLogs(ctx context.Context, streams []push.Stream) error
}

// TracesSink receives identity-stamped traces: every resource carries
// `k8s.cluster.name` and `cluster`.
type TracesSink interface {
	PushTraces(ctx context.Context, td ptrace.Traces) error
}

// Config of logs and traces (the logs_traces: section). The per-cluster log rate limit is
// fleet.Limits.LogsRateBytes.
type Config struct {
	// MaxLineBytes bounds one log line (default 256 KiB).
	MaxLineBytes int `yaml:"max_line_bytes"`
	// MaxStreamsPerRequest bounds the streams of one push (default 10000).
	MaxStreamsPerRequest int `yaml:"max_streams_per_request"`
	// DerivedInterval is how often derived metrics are written (default 15s).
	DerivedInterval model.Duration `yaml:"derived_metrics_interval"`
	// SpanMetricsMaxSeries bounds the span RED metric keys per cluster
	// (service, span name, kind, status); beyond it spans are counted in one
	// overflow series labelled otel_metric_overflow="true". Default 2000.
	SpanMetricsMaxSeries int `yaml:"span_metrics_max_series"`
	// LogMetricsMaxSeries bounds (namespace, level) pairs per cluster. Default 1000.
	LogMetricsMaxSeries int `yaml:"log_metrics_max_series"`
	// SpanDurationBuckets are the histogram buckets in seconds.
	SpanDurationBuckets []float64 `yaml:"span_duration_buckets"`

	// MaxFuture is how far ahead of now a log line or span may be (set from
	// ingest.max_future; default pipeline.DefaultMaxFuture).
	MaxFuture time.Duration `yaml:"-"`
	// LogsMaxAge and TracesMaxAge, when set, refuse log lines and spans
	// older than that (the embedded stores' retention).
	LogsMaxAge   time.Duration `yaml:"-"`
	TracesMaxAge time.Duration `yaml:"-"`

	// Keys that moved to the limits: section.
	MovedLogsRateBytes  *int `yaml:"logs_rate_bytes"`
	MovedLogsBurstBytes *int `yaml:"logs_burst_bytes"`
}

// Validate names the first bad field, in the order of the struct's fields,
// by its key relative to the section (cmd/fleetgate puts the section's path
// in front).
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"max_line_bytes", c.MaxLineBytes},
		{"max_streams_per_request", c.MaxStreamsPerRequest},
		{"span_metrics_max_series", c.SpanMetricsMaxSeries},
		{"log_metrics_max_series", c.LogMetricsMaxSeries},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", f.name, f.v)
		}
	}
	if c.DerivedInterval < 0 {
		return fmt.Errorf("derived_metrics_interval: must not be negative, got %s", c.DerivedInterval)
	}
	for i, b := range c.SpanDurationBuckets {
		if math.IsNaN(b) {
			return fmt.Errorf("span_duration_buckets: NaN is not a bucket boundary")
		}
		if i > 0 && b <= c.SpanDurationBuckets[i-1] {
			return fmt.Errorf("span_duration_buckets: must be strictly increasing, %g follows %g", b, c.SpanDurationBuckets[i-1])
		}
	}
	for _, f := range []struct {
		name string
		v    *int
	}{
		{"logs_rate_bytes", c.MovedLogsRateBytes},
		{"logs_burst_bytes", c.MovedLogsBurstBytes},
	} {
		if f.v != nil {
			return fmt.Errorf("%s: moved to limits.%s (a default for every cluster, overridable per cluster)", f.name, f.name)
		}
	}
	return nil
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{
		MaxLineBytes:         256 << 10,
		MaxStreamsPerRequest: 10_000,
		DerivedInterval:      model.Duration(15 * time.Second),
		SpanMetricsMaxSeries: 2000,
		LogMetricsMaxSeries:  1000,
		// The spanmetrics connector's defaults, in seconds.
		SpanDurationBuckets: []float64{0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = d.MaxLineBytes
	}
	if c.MaxStreamsPerRequest == 0 {
		c.MaxStreamsPerRequest = d.MaxStreamsPerRequest
	}
	if c.DerivedInterval == 0 {
		c.DerivedInterval = d.DerivedInterval
	}
	if c.SpanMetricsMaxSeries == 0 {
		c.SpanMetricsMaxSeries = d.SpanMetricsMaxSeries
	}
	if c.LogMetricsMaxSeries == 0 {
		c.LogMetricsMaxSeries = d.LogMetricsMaxSeries
	}
	if c.MaxFuture <= 0 {
		c.MaxFuture = pipeline.DefaultMaxFuture
	}
	if len(c.SpanDurationBuckets) == 0 {
		c.SpanDurationBuckets = d.SpanDurationBuckets
	}
	return c
}

// Hub is shared by the Loki and OTLP receivers. Safe for concurrent use.
type Hub struct {
	cfg    Config
	reg    *fleet.Registry
	pipe   *pipeline.Pipeline // nil: no derived metrics
	logs   []LogsSink
	traces []TracesSink
	logger *slog.Logger
	start  time.Time
	parser parser.Parser
	limits *core.Limiter
	now    func() time.Time

	// The time bounds of log lines and of spans (ingest/core): the same
	// max_future, each store's retention as its max age.
	logBounds, traceBounds core.TimeBounds

	mu      sync.Mutex
	derived map[string]*clusterDerived // by cluster name

	lines, bytes, spans *prometheus.CounterVec
	rejected            *prometheus.CounterVec
	sinkErrors          *prometheus.CounterVec

	logsFan, tracesFan *fanout // fan-out.go: a retry after a partial failure skips the sinks that stored it
}

// New builds the logs-and-traces hub. pipe may be nil (no derived metrics).
func New(cfg Config, reg *fleet.Registry, pipe *pipeline.Pipeline, logs []LogsSink, traces []TracesSink, r prometheus.Registerer, logger *slog.Logger) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Hub{
		cfg: cfg.withDefaults(), reg: reg, pipe: pipe, logs: logs, traces: traces, logger: logger, start: time.Now(), parser: parser.NewParser(parser.Options{}),
		now: time.Now, derived: map[string]*clusterDerived{}, logsFan: newFanout(), tracesFan: newFanout(),
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_log_lines_total", Help: "Log lines accepted, by cluster.",
		}, []string{"cluster"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_log_bytes_total", Help: "Log line bytes accepted, by cluster.",
		}, []string{"cluster"}),
		spans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_spans_total", Help: "Spans accepted, by cluster.",
		}, []string{"cluster"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_signal_rejected_total", Help: "Log lines and spans rejected, by signal and reason.",
		}, []string{"signal", "reason"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_signal_sink_errors_total", Help: "Failed pushes to a log or trace sink, by signal.",
		}, []string{"signal"}),
	}
	s.logBounds = core.TimeBounds{MaxFuture: s.cfg.MaxFuture, MaxAge: s.cfg.LogsMaxAge, MaxAgeKey: "logs_storage.retention"}
	s.traceBounds = core.TimeBounds{MaxFuture: s.cfg.MaxFuture, MaxAge: s.cfg.TracesMaxAge, MaxAgeKey: "traces_storage.retention"}
	if r != nil {
		for _, c := range []prometheus.Collector{s.lines, s.bytes, s.spans, s.rejected, s.sinkErrors} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering signal metrics: %w", err)
			}
		}
	}
	if pipe != nil {
		s.limits = pipe.Limiter()
	} else {
		var err error
		if s.limits, err = core.NewLimiter(reg, nil); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Limiter enforces the per-cluster request limits (shared with metrics).
func (s *Hub) Limiter() *core.Limiter { return s.limits }

// Registry is the cluster registry used to identify senders.
func (s *Hub) Registry() *fleet.Registry { return s.reg }

// MaxStreamsPerRequest is the configured limit.
func (s *Hub) MaxStreamsPerRequest() int { return s.cfg.MaxStreamsPerRequest }

func badRequest(reason, format string, args ...any) *core.Error {
	return &core.Error{Status: http.StatusBadRequest, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// stampStream parses a Loki label string and returns it with the identity
// stamped (identity, conflict rule, label limits and stamping: ingest/core).
func (s *Hub) stampStream(c *fleet.Cluster, lbls string, sb *labels.ScratchBuilder) (labels.Labels, *fleet.Cluster, *core.Error) {
	ls, err := s.parser.ParseMetric(lbls)
	if err != nil {
		return labels.EmptyLabels(), c, badRequest("invalid_labels", "stream %s: invalid labels: %s", core.Truncate(lbls, 256), core.Truncate(err.Error(), 256))
	}
	if ls.IsEmpty() {
		return ls, c, badRequest("invalid_labels", "stream %s has no labels", core.Truncate(lbls, 256))
	}
	if ls.Has(model.MetricNameLabel) {
		return ls, c, badRequest("invalid_labels", "stream %s: label %s is not allowed", core.Abbrev(ls), model.MetricNameLabel)
	}
	claimed := ls.Get(fleet.ClusterLabel)
	rc, perr := core.Resolve(s.reg, c, claimed)
	if perr != nil {
		return ls, c, perr
	}
	if core.Refused(s.reg, rc, claimed) {
		return ls, rc, core.ConflictError("stream "+core.Abbrev(ls), claimed, rc)
	}
	if lerr := core.CheckLabelLimits(rc.Limits(), "stream", ls); lerr != nil {
		return ls, rc, lerr
	}
	return core.Stamp(sb, ls, rc.StampLabels()), rc, nil
}

// Identity keys of log structured metadata (as sent, and as OTLP attributes
// become structured metadata).
var identityMetadataKeys = []string{fleet.ClusterLabel, "k8s_cluster_name"}

// checkEntry checks a log line's time and identity metadata; overwrite
// policy rewrites a foreign cluster in its structured metadata to c.
func (s *Hub) checkEntry(c *fleet.Cluster, ls labels.Labels, e *push.Entry, now time.Time) *core.Error {
	if len(e.Line) > s.cfg.MaxLineBytes {
		return badRequest("line_too_long", "stream %s: line at %s is %d bytes, more than logs_traces.max_line_bytes (%d)",
			core.Abbrev(ls), e.Timestamp.UTC().Format(time.RFC3339Nano), len(e.Line), s.cfg.MaxLineBytes)
	}
	if perr := s.logBounds.Check(e.Timestamp, now); perr != nil {
		return badRequest(perr.Reason, "stream %s: line %s", core.Abbrev(ls), perr.Msg)
	}
	for i := range e.StructuredMetadata {
		md := &e.StructuredMetadata[i]
		for _, k := range identityMetadataKeys {
			if md.Name != k {
				continue
			}
			overwrite, perr := core.CheckIdentityValue(s.reg, c, k, md.Value, func() string {
				return fmt.Sprintf("stream %s: line at %s has structured metadata", core.Abbrev(ls), e.Timestamp.UTC().Format(time.RFC3339Nano))
			})
			if perr != nil {
				return perr
			}
			if overwrite {
				md.Value = c.Name
			}
		}
	}
	return nil
}

// PushLogs stamps identity on the streams of one request sent with the
// credential of cluster c (nil: dev mode), validates and rate-limits them,
// and writes them to every log sink. Errors are *core.Error with a status, or a
// sink failure (status 503 via core.ErrorStatus -> 500 for plain errors).
// Nothing of a request with an invalid stream or line is stored; the error
// lists the first problems. Streams are modified in place (labels replaced
// by the stamped ones).
func (s *Hub) PushLogs(ctx context.Context, c *fleet.Cluster, streams []push.Stream) error {
	if len(streams) > s.cfg.MaxStreamsPerRequest {
		return &core.Error{Status: http.StatusRequestEntityTooLarge, Reason: "limit",
			Msg: fmt.Sprintf("request has %d streams, more than logs_traces.max_streams_per_request (%d)", len(streams), s.cfg.MaxStreamsPerRequest)}
	}
	type perCluster struct {
		c            *fleet.Cluster
		lines, bytes int
	}
	var (
		counts   []perCluster
		problems core.Problems
		bad      int
	)
	keys := make([]logKey, 0, len(streams))
	sb := labels.NewScratchBuilder(16)
	now := s.now()
	reject := func(sc *fleet.Cluster, perr *core.Error, n int) {
		s.rejected.WithLabelValues("logs", perr.Reason).Add(float64(n))
		if sc != nil {
			sc.Rejected(perr.Reason, n, perr.Msg)
		}
		problems.Add(perr)
		bad += n
	}
	for i := range streams {
		st := &streams[i]
		ls, sc, perr := s.stampStream(c, st.Labels, &sb)
		if perr != nil {
			if perr.Status == http.StatusUnauthorized {
				return perr
			}
			reject(sc, perr, len(st.Entries))
			continue
		}
		n := 0
		for j := range st.Entries {
			e := &st.Entries[j]
			if perr := s.checkEntry(sc, ls, e, now); perr != nil {
				reject(sc, perr, 1)
				continue
			}
			n += len(e.Line)
		}
		st.Labels = ls.String()
		found := false
		for k := range counts {
			if counts[k].c == sc {
				counts[k].lines += len(st.Entries)
				counts[k].bytes += n
				found = true
			}
		}
		if !found {
			counts = append(counts, perCluster{sc, len(st.Entries), n})
		}
		keys = append(keys, logKeyOf(sc.Name, ls))
	}
	if problems.Len() > 0 {
		return &core.Error{Status: http.StatusBadRequest, Reason: "rejected",
			Msg: fmt.Sprintf("%d log lines rejected, nothing of this push was stored: %v", bad, problems.Err())}
	}
	// Before the rate limit: a push no record can hold must not use tokens.
	if perr := pushTooLarge("log streams", logsSize(streams)); perr != nil {
		for _, pc := range counts {
			s.rejected.WithLabelValues("logs", perr.Reason).Add(float64(pc.lines))
			pc.c.Rejected(perr.Reason, pc.lines, perr.Msg)
		}
		return perr
	}
	for _, pc := range counts {
		if err := s.limits.TakeLogBytes(pc.c, pc.lines, pc.bytes); err != nil {
			var pe *core.Error
			if errors.As(err, &pe) {
				s.rejected.WithLabelValues("logs", pe.Reason).Add(float64(pc.lines))
			}
			return err
		}
	}
	err := s.logsFan.write(len(s.logs), func() uint64 { return logsKey(streams) }, func(i int) error {
		if err := s.logs[i].PushLogs(ctx, streams); err != nil {
			s.sinkErrors.WithLabelValues("logs").Inc()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing logs: %w", err)
	}
	for _, pc := range counts {
		if pc.lines > 0 {
			pc.c.WrittenLogs(now, pc.lines)
		}
		s.lines.WithLabelValues(pc.c.Name).Add(float64(pc.lines))
		s.bytes.WithLabelValues(pc.c.Name).Add(float64(pc.bytes))
	}
	if s.pipe != nil {
		for i := range streams {
			s.countLogs(keys[i], streams[i].Entries)
		}
	}
	return nil
}

// Resource attribute names carrying identity on OTLP data.
const (
	AttrK8sClusterName = "k8s.cluster.name"
	AttrCluster        = "cluster"
)

// StampResource checks the identity claimed by an OTLP resource against the
// credential's cluster c (nil: dev mode) and sets k8s.cluster.name and
// cluster (and the cluster's extra stamp labels) on it.
func (s *Hub) StampResource(c *fleet.Cluster, res pcommon.Resource) (*fleet.Cluster, error) {
	attrs := res.Attributes()
	claimed := ""
	for _, k := range []string{AttrCluster, AttrK8sClusterName} {
		if v, ok := attrs.Get(k); ok && v.AsString() != "" {
			if claimed != "" && v.AsString() != claimed && c == nil {
				return nil, badRequest("conflict", "resource claims two clusters: %s=%q and %s=%q", AttrCluster, claimed, k, v.AsString())
			}
			if claimed == "" {
				claimed = v.AsString()
			}
			if c != nil && core.Refused(s.reg, c, v.AsString()) {
				return c, badRequest("conflict", "resource with %s=%q claims another cluster than the credential proves (%q)", k, v.AsString(), c.Name)
			}
		}
	}
	c, perr := core.Resolve(s.reg, c, claimed)
	if perr != nil {
		return c, perr
	}
	for _, kv := range c.StampLabels() {
		attrs.PutStr(kv[0], kv[1])
	}
	attrs.PutStr(AttrK8sClusterName, c.Name)
	return c, nil
}

// PushTraces stamps identity on every resource, checks the spans' times,
// writes the traces to every trace sink and counts the spans for the RED
// metrics. c is the credential's cluster (nil: dev mode). Nothing of a
// request with a refused resource or span is stored.
func (s *Hub) PushTraces(ctx context.Context, c *fleet.Cluster, td ptrace.Traces) error {
	rss := td.ResourceSpans()
	clusters := make([]*fleet.Cluster, rss.Len())
	for i := range rss.Len() {
		rc, err := s.StampResource(c, rss.At(i).Resource())
		if err != nil {
			var pe *core.Error
			if errors.As(err, &pe) {
				s.rejected.WithLabelValues("traces", pe.Reason).Add(float64(td.SpanCount()))
				if rc != nil {
					rc.Rejected(pe.Reason, td.SpanCount(), pe.Msg)
				}
			}
			return err
		}
		clusters[i] = rc
	}
	if err := s.checkSpans(td, clusters); err != nil {
		return err
	}
	if perr := pushTooLarge("spans", (&ptrace.ProtoMarshaler{}).TracesSize(td)); perr != nil {
		s.rejected.WithLabelValues("traces", perr.Reason).Add(float64(td.SpanCount()))
		return perr
	}
	err := s.tracesFan.write(len(s.traces), func() uint64 { return tracesKey(td) }, func(i int) error {
		if err := s.traces[i].PushTraces(ctx, td); err != nil {
			s.sinkErrors.WithLabelValues("traces").Inc()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing traces: %w", err)
	}
	now := time.Now()
	for i := range rss.Len() {
		n := 0
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			n += sss.At(j).Spans().Len()
		}
		if n > 0 {
			clusters[i].WrittenSpans(now, n)
		}
		s.spans.WithLabelValues(clusters[i].Name).Add(float64(n))
		if s.pipe != nil {
			s.countSpans(clusters[i].Name, rss.At(i))
		}
	}
	return nil
}

// checkSpans refuses spans whose start or end is out of the trace time
// bounds (core.TimeBounds): more than max_future ahead, at or before 1970,
// or older than the trace store's retention.
func (s *Hub) checkSpans(td ptrace.Traces, clusters []*fleet.Cluster) error {
	now := s.now()
	var (
		problems core.Problems
		bad      int
	)
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				sp := spans.At(k)
				terr := s.traceBounds.Check(nanosTime(sp.StartTimestamp()), now)
				what := "start"
				if terr == nil {
					terr = s.traceBounds.Check(nanosTime(sp.EndTimestamp()), now)
					what = "end"
				}
				if terr == nil {
					continue
				}
				perr := badRequest(terr.Reason, "span %s: %s %s", core.Abbrev(spanLabels(rs.Resource(), sp)), what, terr.Msg)
				s.rejected.WithLabelValues("traces", perr.Reason).Inc()
				clusters[i].Rejected(perr.Reason, 1, perr.Msg)
				problems.Add(perr)
				bad++
			}
		}
	}
	if problems.Len() == 0 {
		return nil
	}
	return &core.Error{Status: http.StatusBadRequest, Reason: "rejected",
		Msg: fmt.Sprintf("%d spans rejected, nothing of this request was stored: %v", bad, problems.Err())}
}

// nanosTime converts an OTLP timestamp, clamping ones past time.Time's
// nanosecond range (after 2262) to its end.
func nanosTime(t pcommon.Timestamp) time.Time {
	if uint64(t) > math.MaxInt64 {
		return time.Unix(0, math.MaxInt64)
	}
	return time.Unix(0, int64(t))
}

// spanLabels names a span in messages: service, span name and IDs.
func spanLabels(res pcommon.Resource, sp ptrace.Span) labels.Labels {
	svc := ""
	if v, ok := res.Attributes().Get("service.name"); ok {
		svc = v.AsString()
	}
	return labels.FromStrings("service_name", svc, "span_name", sp.Name(), "trace_id", sp.TraceID().String(), "span_id", sp.SpanID().String())
}
