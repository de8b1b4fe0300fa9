package logtrace

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// Names of the derived metrics.
const (
	MetricLogLines  = "fleetgate_log_lines_total"
	MetricLogBytes  = "fleetgate_log_bytes_total"
	MetricSpanCalls = "traces_span_metrics_calls_total"
	MetricSpanDur   = "traces_span_metrics_duration_seconds"
	overflowValue   = "__overflow__"
	overflowLabel   = "otel_metric_overflow"
)

type logKey struct {
	cluster, namespace, level string
}

type nsLevel struct{ namespace, level string }

type logCount struct{ lines, bytes uint64 }

type spanKey struct {
	service, name, kind, status string
	overflow                    bool
}

type spanAgg struct {
	calls   uint64
	sum     float64
	buckets []uint64 // cumulative at flush; per-bucket here
}

type clusterDerived struct {
	c     *fleet.Cluster
	logs  map[nsLevel]*logCount
	spans map[spanKey]*spanAgg
}

// logKeyOf takes namespace and level from the stream labels.
func logKeyOf(cluster string, ls labels.Labels) logKey {
	k := logKey{cluster: cluster}
	for _, n := range []string{"namespace", "k8s_namespace_name", "service_namespace"} {
		if v := ls.Get(n); v != "" {
			k.namespace = v
			break
		}
	}
	for _, n := range []string{"level", "detected_level", "severity", "severity_text"} {
		if v := ls.Get(n); v != "" {
			k.level = v
			break
		}
	}
	return k
}

func entryLevel(md push.LabelsAdapter) string {
	for _, l := range md {
		switch l.Name {
		case "level", "detected_level", "severity", "severity_text":
			return l.Value
		}
	}
	return ""
}

func (s *Hub) clusterState(name string) *clusterDerived {
	d := s.derived[name]
	if d == nil {
		c := s.reg.Get(name)
		if c == nil {
			c = s.reg.Dev(name)
		}
		d = &clusterDerived{c: c, logs: map[nsLevel]*logCount{}, spans: map[spanKey]*spanAgg{}}
		s.derived[name] = d
	}
	return d
}

func (s *Hub) countLogs(k logKey, entries []push.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.clusterState(k.cluster)
	for i := range entries {
		lvl := k.level
		if lvl == "" {
			lvl = entryLevel(entries[i].StructuredMetadata)
		}
		if lvl == "" {
			lvl = "unknown"
		}
		key := nsLevel{k.namespace, lvl}
		lc := d.logs[key]
		if lc == nil {
			if len(d.logs) >= s.cfg.LogMetricsMaxSeries {
				key = nsLevel{overflowValue, overflowValue}
				lc = d.logs[key]
			}
			if lc == nil {
				lc = &logCount{}
				d.logs[key] = lc
			}
		}
		lc.lines++
		lc.bytes += uint64(len(entries[i].Line))
	}
}

func (s *Hub) countSpans(cluster string, rs ptrace.ResourceSpans) {
	service := "unknown_service"
	if v, ok := rs.Resource().Attributes().Get("service.name"); ok {
		service = v.AsString()
	}
	bounds := s.cfg.SpanDurationBuckets
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.clusterState(cluster)
	sss := rs.ScopeSpans()
	for i := range sss.Len() {
		spans := sss.At(i).Spans()
		for j := range spans.Len() {
			sp := spans.At(j)
			key := spanKey{service: service, name: sp.Name(), kind: spanKindName(sp.Kind()), status: statusCodeName(sp.Status().Code())}
			agg := d.spans[key]
			if agg == nil {
				if len(d.spans) >= s.cfg.SpanMetricsMaxSeries {
					key = spanKey{overflow: true}
					agg = d.spans[key]
				}
				if agg == nil {
					agg = &spanAgg{buckets: make([]uint64, len(bounds)+1)}
					d.spans[key] = agg
				}
			}
			dur := 0.0
			if e, st := sp.EndTimestamp(), sp.StartTimestamp(); e > st {
				dur = float64(e-st) / 1e9
			}
			agg.calls++
			agg.sum += dur
			agg.buckets[sort.SearchFloat64s(bounds, dur)]++
		}
	}
}

func spanKindName(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindInternal:
		return "SPAN_KIND_INTERNAL"
	case ptrace.SpanKindServer:
		return "SPAN_KIND_SERVER"
	case ptrace.SpanKindClient:
		return "SPAN_KIND_CLIENT"
	case ptrace.SpanKindProducer:
		return "SPAN_KIND_PRODUCER"
	case ptrace.SpanKindConsumer:
		return "SPAN_KIND_CONSUMER"
	}
	return "SPAN_KIND_UNSPECIFIED"
}

func statusCodeName(c ptrace.StatusCode) string {
	switch c {
	case ptrace.StatusCodeOk:
		return "STATUS_CODE_OK"
	case ptrace.StatusCodeError:
		return "STATUS_CODE_ERROR"
	}
	return "STATUS_CODE_UNSET"
}

// Run writes the derived metrics every interval until ctx ends, then once more.
func (s *Hub) Run(ctx context.Context) error {
	if s.pipe == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(time.Duration(s.cfg.DerivedInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.Flush(context.Background(), time.Now()); err != nil {
				s.logger.Warn("writing derived metrics at shutdown", "err", err)
			}
			return nil
		case now := <-t.C:
			if err := s.Flush(ctx, now); err != nil {
				s.logger.Warn("writing derived metrics", "err", err)
			}
		}
	}
}

type flushSeries struct {
	ls labels.Labels
	v  float64
	md metadata.Metadata
}

var (
	mdCounter = metadata.Metadata{Type: model.MetricTypeCounter}
	mdHist    = metadata.Metadata{Type: model.MetricTypeHistogram, Unit: "seconds"}
)

// Flush writes the current cumulative values of the derived metrics at now.
func (s *Hub) Flush(ctx context.Context, now time.Time) error {
	if s.pipe == nil {
		return nil
	}
	type batchData struct {
		c      *fleet.Cluster
		series []flushSeries
	}
	var all []batchData
	s.mu.Lock()
	names := make([]string, 0, len(s.derived))
	for n := range s.derived {
		names = append(names, n)
	}
	sort.Strings(names)
	bounds := s.cfg.SpanDurationBuckets
	for _, n := range names {
		d := s.derived[n]
		bd := batchData{c: d.c}
		for k, lc := range d.logs {
			base := []string{"namespace", k.namespace, "level", k.level}
			bd.series = append(bd.series,
				flushSeries{labels.FromStrings(append([]string{model.MetricNameLabel, MetricLogLines}, base...)...), float64(lc.lines), mdCounter},
				flushSeries{labels.FromStrings(append([]string{model.MetricNameLabel, MetricLogBytes}, base...)...), float64(lc.bytes), mdCounter})
		}
		for k, agg := range d.spans {
			var base []string
			if k.overflow {
				base = []string{overflowLabel, "true"}
			} else {
				base = []string{"service_name", k.service, "span_name", k.name, "span_kind", k.kind, "status_code", k.status}
			}
			with := func(name string, extra ...string) labels.Labels {
				return labels.FromStrings(append(append([]string{model.MetricNameLabel, name}, base...), extra...)...)
			}
			bd.series = append(bd.series,
				flushSeries{with(MetricSpanCalls), float64(agg.calls), mdCounter},
				flushSeries{with(MetricSpanDur + "_count"), float64(agg.calls), mdHist},
				flushSeries{with(MetricSpanDur + "_sum"), agg.sum, mdHist})
			var cum uint64
			for i, b := range agg.buckets {
				cum += b
				le := "+Inf"
				if i < len(bounds) {
					le = strconv.FormatFloat(bounds[i], 'f', -1, 64)
				}
				bd.series = append(bd.series, flushSeries{with(MetricSpanDur+"_bucket", "le", le), float64(cum), mdHist})
			}
		}
		all = append(all, bd)
	}
	s.mu.Unlock()

	st, t := s.start.UnixMilli(), now.UnixMilli()
	var errs []error
	var ser pipeline.Series
	for _, bd := range all {
		if len(bd.series) == 0 {
			continue
		}
		b := s.pipe.BeginInternal(ctx, bd.c) // not the cluster's own write: no freshness
		for _, fs := range bd.series {
			ser.Reset()
			ser.Labels = fs.ls
			ser.Metadata = fs.md
			ser.Samples = append(ser.Samples, pipeline.Sample{ST: st, T: t, V: fs.v})
			if err := b.Add(&ser); err != nil {
				break
			}
		}
		if _, err := b.Commit(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
