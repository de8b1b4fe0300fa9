package otlp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// BenchmarkOTLPResourceAttributes exports one data point, log record or
// span under a resource with n attributes. Prometheus's translator costs
// O(n²) in n (its labels.Builder Get/Set are linear, per attribute, for
// target_info); limits.max_otlp_resource_attributes (default 128) refuses
// such a resource before translation, in time independent of n. With the
// limit off (0) the translator's cost is what remains.
func BenchmarkOTLPResourceAttributes(b *testing.B) {
	now := pcommon.NewTimestampFromTime(time.Now())
	for _, limit := range []int{128, 0} {
		for _, n := range []int{1000, 4000, 100_000} {
			if limit == 0 && n > 4000 {
				continue // about 30 s per export for metrics
			}
			lim := fleet.DefaultLimits()
			lim.MaxOTLPResourceAttributes = limit
			for _, signal := range []string{"metrics", "logs", "traces"} {
				b.Run(fmt.Sprintf("limit=%d/%s/attrs=%d", limit, signal, n), func(b *testing.B) {
					e := newEnvLimits(b, lim, pipeline.Config{})
					c := e.rc.sig.Registry().Get("eu-1")
					for b.Loop() {
						b.StopTimer()
						var export func() error
						switch signal {
						case "metrics":
							md := pmetric.NewMetrics()
							rm := md.ResourceMetrics().AppendEmpty()
							fill(rm.Resource().Attributes(), n)
							g := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
							g.SetName("queue.depth")
							dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
							dp.SetTimestamp(now)
							dp.SetDoubleValue(1)
							export = func() error { _, err := e.rc.ExportMetrics(context.Background(), c, md); return err }
						case "logs":
							ld := plog.NewLogs()
							rl := ld.ResourceLogs().AppendEmpty()
							fill(rl.Resource().Attributes(), n)
							lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
							lr.SetTimestamp(now)
							lr.Body().SetStr("hello")
							export = func() error { _, err := e.rc.ExportLogs(context.Background(), c, ld); return err }
						case "traces":
							td := ptrace.NewTraces()
							rs := td.ResourceSpans().AppendEmpty()
							fill(rs.Resource().Attributes(), n)
							sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
							sp.SetTraceID(pcommon.TraceID{1})
							sp.SetSpanID(pcommon.SpanID{1})
							sp.SetName("GET /")
							sp.SetStartTimestamp(now)
							sp.SetEndTimestamp(now)
							export = func() error { _, err := e.rc.ExportTraces(context.Background(), c, td); return err }
						}
						b.StartTimer()
						err := export()
						if (limit > 0 && n > limit) != (err != nil) {
							b.Fatalf("limit %d, %d attributes: %v", limit, n, err)
						}
					}
				})
			}
		}
	}
}
