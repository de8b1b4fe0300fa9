// Package signals carries logs and traces from their receivers (Loki push,
// OTLP) to their sinks (the embedded stores, the forwarders): it stamps the
// cluster identity on every log stream and every OTLP resource, applies the
// per-cluster log rate limit, fans out to the sinks, and derives metrics
// (log lines and bytes, span RED metrics) that it writes through the metrics
// pipeline into the TSDB.
package signals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/fleet"
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

// Config of the log and trace signals.
type Config struct {
	// LogsRateBytes is the per-cluster log ingestion rate limit in bytes per
	// second (0: unlimited); LogsBurstBytes its burst (default 2x rate).
	LogsRateBytes  int `yaml:"logs_rate_bytes"`
	LogsBurstBytes int `yaml:"logs_burst_bytes"`
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
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	for name, v := range map[string]int{
		"logs_traces.logs_rate_bytes":         c.LogsRateBytes,
		"logs_traces.logs_burst_bytes":        c.LogsBurstBytes,
		"logs_traces.max_line_bytes":          c.MaxLineBytes,
		"logs_traces.max_streams_per_request": c.MaxStreamsPerRequest,
		"logs_traces.span_metrics_max_series": c.SpanMetricsMaxSeries,
		"logs_traces.log_metrics_max_series":  c.LogMetricsMaxSeries,
	} {
		if v < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", name, v)
		}
	}
	if c.DerivedInterval < 0 {
		return fmt.Errorf("logs_traces.derived_metrics_interval: must not be negative, got %s", c.DerivedInterval)
	}
	for i, b := range c.SpanDurationBuckets {
		if i > 0 && b <= c.SpanDurationBuckets[i-1] {
			return fmt.Errorf("logs_traces.span_duration_buckets: must be strictly increasing, %g follows %g", b, c.SpanDurationBuckets[i-1])
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = 256 << 10
	}
	if c.MaxStreamsPerRequest == 0 {
		c.MaxStreamsPerRequest = 10_000
	}
	if c.DerivedInterval == 0 {
		c.DerivedInterval = model.Duration(15 * time.Second)
	}
	if c.SpanMetricsMaxSeries == 0 {
		c.SpanMetricsMaxSeries = 2000
	}
	if c.LogMetricsMaxSeries == 0 {
		c.LogMetricsMaxSeries = 1000
	}
	if c.LogsRateBytes > 0 && c.LogsBurstBytes == 0 {
		c.LogsBurstBytes = 2 * c.LogsRateBytes
	}
	if len(c.SpanDurationBuckets) == 0 {
		// The spanmetrics connector's defaults, in seconds.
		c.SpanDurationBuckets = []float64{0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15}
	}
	return c
}

// Limits on stream labels, as Loki's defaults (max_label_names_per_series is
// 15 in Loki; fleetgate allows more because it adds identity labels).
const (
	maxStreamLabels     = 30
	maxLabelNameLength  = 1024
	maxLabelValueLength = 2048
)

// Error is a rejection with its HTTP status (400, 401, 413, 429) and, for
// OTLP, whether the sender should retry.
type Error = pipeline.Error

// Signals is shared by the Loki and OTLP receivers. Safe for concurrent use.
type Signals struct {
	cfg    Config
	reg    *fleet.Registry
	pipe   *pipeline.Pipeline // nil: no derived metrics
	logs   []LogsSink
	traces []TracesSink
	logger *slog.Logger
	start  time.Time
	parser parser.Parser

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	derived  map[string]*clusterDerived // by cluster name

	lines, bytes, spans *prometheus.CounterVec
	rejected            *prometheus.CounterVec
	sinkErrors          *prometheus.CounterVec

	logsFan, tracesFan *fanout // fan-out.go: a retry after a partial failure skips the sinks that stored it
}

// New builds the signals hub. pipe may be nil (no derived metrics).
func New(cfg Config, reg *fleet.Registry, pipe *pipeline.Pipeline, logs []LogsSink, traces []TracesSink, r prometheus.Registerer, logger *slog.Logger) (*Signals, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Signals{
		cfg: cfg.withDefaults(), reg: reg, pipe: pipe, logs: logs, traces: traces, logger: logger, start: time.Now(), parser: parser.NewParser(parser.Options{}),
		limiters: map[string]*rate.Limiter{}, derived: map[string]*clusterDerived{}, logsFan: newFanout(), tracesFan: newFanout(),
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
	if r != nil {
		for _, c := range []prometheus.Collector{s.lines, s.bytes, s.spans, s.rejected, s.sinkErrors} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering signal metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Registry is the cluster registry used to identify senders.
func (s *Signals) Registry() *fleet.Registry { return s.reg }

// MaxStreamsPerRequest is the configured limit.
func (s *Signals) MaxStreamsPerRequest() int { return s.cfg.MaxStreamsPerRequest }

func (s *Signals) limiter(cluster string) *rate.Limiter {
	if s.cfg.LogsRateBytes <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limiters[cluster]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.cfg.LogsRateBytes), s.cfg.LogsBurstBytes)
		s.limiters[cluster] = l
	}
	return l
}

func badRequest(reason, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// resolve returns the cluster of data claiming `claimed` sent with
// credential cluster c (nil in dev mode).
func (s *Signals) resolve(c *fleet.Cluster, claimed, what string) (*fleet.Cluster, *Error) {
	if c == nil {
		c = s.reg.Dev(claimed)
		if c == nil {
			return nil, &Error{Status: http.StatusUnauthorized, Reason: "unauthenticated", Msg: "no cluster identity"}
		}
		return c, nil
	}
	if claimed != "" && claimed != c.Name && s.reg.OnConflict() == fleet.ConflictReject {
		return c, badRequest("conflict", "%s claims cluster %q but the credential proves cluster %q", what, claimed, c.Name)
	}
	return c, nil
}

// stampStream parses a Loki label string and returns it with the identity stamped.
func (s *Signals) stampStream(c *fleet.Cluster, lbls string, sb *labels.Builder) (labels.Labels, *fleet.Cluster, *Error) {
	ls, err := s.parser.ParseMetric(lbls)
	if err != nil {
		return labels.EmptyLabels(), c, badRequest("invalid_labels", "stream %.200s: invalid labels: %v", lbls, err)
	}
	if ls.IsEmpty() {
		return ls, c, badRequest("invalid_labels", "stream %s has no labels", lbls)
	}
	if ls.Has(model.MetricNameLabel) {
		return ls, c, badRequest("invalid_labels", "stream %.200s: label %s is not allowed", lbls, model.MetricNameLabel)
	}
	if ls.Len() > maxStreamLabels {
		return ls, c, badRequest("limit", "stream %.200s has %d labels, more than the limit of %d", lbls, ls.Len(), maxStreamLabels)
	}
	var lerr *Error
	ls.Range(func(l labels.Label) {
		if lerr == nil && (len(l.Name) > maxLabelNameLength || len(l.Value) > maxLabelValueLength) {
			lerr = badRequest("limit", "stream %.200s: label %.64q or its value is longer than the limit (%d/%d bytes)", lbls, l.Name, maxLabelNameLength, maxLabelValueLength)
		}
	})
	if lerr != nil {
		return ls, c, lerr
	}
	c, perr := s.resolve(c, ls.Get(fleet.ClusterLabel), "stream "+ls.String())
	if perr != nil {
		return ls, c, perr
	}
	sb.Reset(ls)
	for _, kv := range c.StampLabels() {
		sb.Set(kv[0], kv[1])
	}
	return sb.Labels(), c, nil
}

// PushLogs stamps identity on the streams of one request sent with the
// credential of cluster c (nil: dev mode), validates and rate-limits them,
// and writes them to every log sink. Errors are *Error with a status, or a
// sink failure (status 503 via pipeline.ErrorStatus -> 500 for plain errors).
// Streams are modified in place (labels replaced by the stamped ones).
func (s *Signals) PushLogs(ctx context.Context, c *fleet.Cluster, streams []push.Stream) error {
	if len(streams) > s.cfg.MaxStreamsPerRequest {
		return &Error{Status: http.StatusRequestEntityTooLarge, Reason: "limit",
			Msg: fmt.Sprintf("request has %d streams, more than signals.max_streams_per_request (%d)", len(streams), s.cfg.MaxStreamsPerRequest)}
	}
	type perCluster struct {
		c            *fleet.Cluster
		lines, bytes int
	}
	var counts []perCluster
	keys := make([]logKey, 0, len(streams))
	var sb labels.Builder
	sb.Reset(labels.EmptyLabels())
	for i := range streams {
		st := &streams[i]
		ls, sc, perr := s.stampStream(c, st.Labels, &sb)
		if perr != nil {
			s.rejected.WithLabelValues("logs", perr.Reason).Add(float64(len(st.Entries)))
			if sc != nil {
				sc.Rejected(perr.Reason, len(st.Entries), perr.Msg)
			}
			return perr
		}
		n := 0
		for j := range st.Entries {
			e := &st.Entries[j]
			if len(e.Line) > s.cfg.MaxLineBytes {
				perr := badRequest("line_too_long", "stream %s: line at %s is %d bytes, more than signals.max_line_bytes (%d)",
					ls.String(), e.Timestamp.UTC().Format(time.RFC3339Nano), len(e.Line), s.cfg.MaxLineBytes)
				s.rejected.WithLabelValues("logs", perr.Reason).Add(float64(len(st.Entries)))
				sc.Rejected(perr.Reason, len(st.Entries), perr.Msg)
				return perr
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
	// A request larger than the burst can never pass the limiter: refuse it
	// as too large (413, not retried) instead of a 429 retried for ever.
	for _, pc := range counts {
		if s.cfg.LogsRateBytes > 0 && pc.bytes > s.cfg.LogsBurstBytes {
			msg := fmt.Sprintf("request carries %d log bytes for cluster %q, more than logs_traces.logs_burst_bytes (%d); send smaller pushes",
				pc.bytes, pc.c.Name, s.cfg.LogsBurstBytes)
			s.rejected.WithLabelValues("logs", "too_large").Add(float64(pc.lines))
			pc.c.Rejected("too_large", pc.lines, msg)
			return &Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large", Msg: msg}
		}
	}
	for _, pc := range counts {
		if l := s.limiter(pc.c.Name); l != nil && !l.AllowN(time.Now(), pc.bytes) {
			msg := fmt.Sprintf("cluster %q is over its log ingestion limit of %d bytes/s (burst %d); this request has %d bytes",
				pc.c.Name, s.cfg.LogsRateBytes, s.cfg.LogsBurstBytes, pc.bytes)
			s.rejected.WithLabelValues("logs", "rate_limited").Add(float64(pc.lines))
			pc.c.Rejected("rate_limited", pc.lines, msg)
			return &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited", Msg: msg}
		}
	}
	if perr := pushTooLarge("log streams", logsSize(streams)); perr != nil {
		for _, pc := range counts {
			s.rejected.WithLabelValues("logs", perr.Reason).Add(float64(pc.lines))
			pc.c.Rejected(perr.Reason, pc.lines, perr.Msg)
		}
		return perr
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
	now := time.Now()
	for _, pc := range counts {
		pc.c.WrittenLogs(now, pc.lines)
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
func (s *Signals) StampResource(c *fleet.Cluster, res pcommon.Resource) (*fleet.Cluster, error) {
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
			if c != nil && v.AsString() != c.Name && s.reg.OnConflict() == fleet.ConflictReject {
				return c, badRequest("conflict", "resource with %s=%q claims another cluster than the credential proves (%q)", k, v.AsString(), c.Name)
			}
		}
	}
	c, perr := s.resolve(c, claimed, "resource")
	if perr != nil {
		return c, perr
	}
	for _, kv := range c.StampLabels() {
		attrs.PutStr(kv[0], kv[1])
	}
	attrs.PutStr(AttrK8sClusterName, c.Name)
	return c, nil
}

// PushTraces stamps identity on every resource, writes the traces to every
// trace sink and counts the spans for the RED metrics. c is the credential's
// cluster (nil: dev mode).
func (s *Signals) PushTraces(ctx context.Context, c *fleet.Cluster, td ptrace.Traces) error {
	rss := td.ResourceSpans()
	clusters := make([]*fleet.Cluster, rss.Len())
	for i := range rss.Len() {
		rc, err := s.StampResource(c, rss.At(i).Resource())
		if err != nil {
			var pe *Error
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
		clusters[i].WrittenSpans(now, n)
		s.spans.WithLabelValues(clusters[i].Name).Add(float64(n))
		if s.pipe != nil {
			s.countSpans(clusters[i].Name, rss.At(i))
		}
	}
	return nil
}
