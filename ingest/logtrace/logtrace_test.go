package logtrace

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

type sink struct {
	mu sync.Mutex
	v  map[string]float64
}

type app struct {
	s *sink
	p map[string]float64
}

func (s *sink) AppenderV2(context.Context) storage.AppenderV2 {
	return &app{s: s, p: map[string]float64{}}
}
func (a *app) Append(_ storage.SeriesRef, ls labels.Labels, _, _ int64, v float64, _ *histogram.Histogram, _ *histogram.FloatHistogram, _ storage.AOptions) (storage.SeriesRef, error) {
	a.p[ls.String()] = v
	return 1, nil
}
func (a *app) Commit() error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	for k, v := range a.p {
		a.s.v[k] = v
	}
	return nil
}
func (a *app) Rollback() error { return nil }

type logSink struct{ got []push.Stream }

func (l *logSink) PushLogs(_ context.Context, s []push.Stream) error {
	l.got = append(l.got, s...)
	return nil
}

func newDev(t *testing.T, cfg Config) (*Hub, *sink, *logSink) {
	reg, err := fleet.NewRegistry(fleet.Config{})
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &sink{v: map[string]float64{}}
	pipe, err := pipeline.New(pipeline.Config{}, reg, s, nil, nil, logger)
	require.NoError(t, err)
	ls := &logSink{}
	sig, err := New(cfg, reg, pipe, []LogsSink{ls}, nil, nil, logger)
	require.NoError(t, err)
	return sig, s, ls
}

func TestDevModeIdentityAndLogMetrics(t *testing.T) {
	sig, s, ls := newDev(t, Config{LogMetricsMaxSeries: 2})
	now := time.Now()
	streams := []push.Stream{
		{Labels: `{app="a", cluster="dev-1", namespace="shop", level="error"}`, Entries: []push.Entry{{Timestamp: now, Line: "12345"}}},
		{Labels: `{app="b", namespace="shop"}`, Entries: []push.Entry{
			{Timestamp: now, Line: "1", StructuredMetadata: push.LabelsAdapter{{Name: "detected_level", Value: "warn"}}},
			{Timestamp: now, Line: "22"},
		}},
	}
	require.NoError(t, sig.PushLogs(context.Background(), nil, streams))
	require.Equal(t, `{app="a", cluster="dev-1", level="error", namespace="shop"}`, ls.got[0].Labels)
	require.Equal(t, `{app="b", cluster="default", namespace="shop"}`, ls.got[1].Labels)
	require.NoError(t, sig.Flush(context.Background(), now))
	require.Equal(t, map[string]float64{
		`{__name__="fleetgate_log_lines_total", cluster="dev-1", level="error", namespace="shop"}`:     1,
		`{__name__="fleetgate_log_bytes_total", cluster="dev-1", level="error", namespace="shop"}`:     5,
		`{__name__="fleetgate_log_lines_total", cluster="default", level="warn", namespace="shop"}`:    1,
		`{__name__="fleetgate_log_bytes_total", cluster="default", level="warn", namespace="shop"}`:    1,
		`{__name__="fleetgate_log_lines_total", cluster="default", level="unknown", namespace="shop"}`: 1,
		`{__name__="fleetgate_log_bytes_total", cluster="default", level="unknown", namespace="shop"}`: 2,
	}, s.v)
	// Over the per-cluster limit of (namespace, level) pairs: counted in the overflow series.
	require.NoError(t, sig.PushLogs(context.Background(), nil, []push.Stream{{Labels: `{app="b", namespace="other"}`, Entries: []push.Entry{{Timestamp: now, Line: "x"}}}}))
	require.NoError(t, sig.Flush(context.Background(), now.Add(time.Second)))
	require.Equal(t, 1.0, s.v[`{__name__="fleetgate_log_lines_total", cluster="default", level="__overflow__", namespace="__overflow__"}`])
}

func TestSpanMetricsCardinalityLimit(t *testing.T) {
	sig, s, _ := newDev(t, Config{SpanMetricsMaxSeries: 3})
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "api")
	rs.Resource().Attributes().PutStr("k8s.cluster.name", "dev-2")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	now := time.Now()
	for i := range 10 {
		sp := spans.AppendEmpty()
		sp.SetTraceID(pcommon.TraceID{1})
		sp.SetName(fmt.Sprintf("op-%d", i))
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(3 * time.Millisecond)))
	}
	require.NoError(t, sig.PushTraces(context.Background(), nil, td))
	v, _ := rs.Resource().Attributes().Get("cluster")
	require.Equal(t, "dev-2", v.AsString())
	require.NoError(t, sig.Flush(context.Background(), now))
	calls := 0
	for k, v := range s.v {
		if len(k) > 40 && k[:40] == `{__name__="traces_span_metrics_calls_tot` {
			calls++
			if v == 7 {
				require.Equal(t, `{__name__="traces_span_metrics_calls_total", cluster="dev-2", otel_metric_overflow="true"}`, k)
			}
		}
	}
	require.Equal(t, 4, calls) // 3 keys + the overflow series
	require.Equal(t, 7.0, s.v[`{__name__="traces_span_metrics_calls_total", cluster="dev-2", otel_metric_overflow="true"}`])
	require.Equal(t, 1.0, s.v[`{__name__="traces_span_metrics_duration_seconds_bucket", cluster="dev-2", le="0.004", service_name="api", span_kind="SPAN_KIND_UNSPECIFIED", span_name="op-0", status_code="STATUS_CODE_UNSET"}`])
	require.Equal(t, 0.0, s.v[`{__name__="traces_span_metrics_duration_seconds_bucket", cluster="dev-2", le="0.002", service_name="api", span_kind="SPAN_KIND_UNSPECIFIED", span_name="op-0", status_code="STATUS_CODE_UNSET"}`])
}

func TestConfigValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxLineBytes: -1}, "max_line_bytes"},
		{Config{MovedLogsRateBytes: new(int)}, "logs_rate_bytes: moved to limits.logs_rate_bytes"},
		{Config{SpanDurationBuckets: []float64{1, 0.5}}, "span_duration_buckets"},
		{Config{DerivedInterval: -1}, "derived_metrics_interval"},
	} {
		require.ErrorContains(t, tc.cfg.Validate(), tc.want)
	}
}
