package otlp

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTraces is one export of 1000 spans: 10 services x 20 traces x 5 spans.
func benchTraces(seq int) ptrace.Traces {
	td := ptrace.NewTraces()
	now := time.Now()
	for s := range 10 {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "svc-"+string(rune('a'+s)))
		rs.Resource().Attributes().PutStr("k8s.namespace.name", "shop")
		rs.Resource().Attributes().PutStr("k8s.pod.name", "pod-1234")
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		for tr := range 20 {
			id := pcommon.TraceID{byte(seq), byte(seq >> 8), byte(seq >> 16), byte(s), byte(tr)}
			for k := range 5 {
				sp := spans.AppendEmpty()
				sp.SetTraceID(id)
				sp.SetSpanID(pcommon.SpanID{byte(k + 1), byte(tr)})
				if k > 0 {
					sp.SetParentSpanID(pcommon.SpanID{1, byte(tr)})
				}
				sp.SetName([]string{"GET /cart", "SELECT", "redis GET", "POST /pay", "publish"}[k])
				sp.SetKind(ptrace.SpanKindServer)
				sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
				sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(k+1) * time.Millisecond)))
				sp.Attributes().PutStr("http.method", "GET")
				sp.Attributes().PutInt("http.status_code", 200)
			}
		}
	}
	return td
}

// BenchmarkOTLPSpans measures OTLP/HTTP protobuf trace ingestion end to end
// (decode, identity, fsynced trace store, RED metric counting) and reports
// spans per CPU-second of the whole process.
func BenchmarkOTLPSpans(b *testing.B) {
	e := newEnv(b, pipeline.Config{})
	bodies := make([][]byte, 16)
	for i := range bodies {
		bodies[i], _ = ptraceotlp.NewExportRequestFromTraces(benchTraces(i)).MarshalProto()
	}
	mux := http.NewServeMux()
	e.rc.Register(mux)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	spans := 0
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest("POST", "/v1/traces", bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer tok-eu-1")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		spans += 1000
	}
	b.ReportMetric(float64(spans)/(cpuTime()-cpu0).Seconds(), "spans/cpu-s")
}
