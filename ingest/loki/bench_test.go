package loki

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"

	"github.com/fleetgate/fleetgate/ingest/logtrace"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLokiLines measures Loki push ingestion end to end (snappy
// protobuf decode, identity, fsynced log store) with 1000 lines per push
// (20 streams x 50 lines of ~120 bytes) and reports lines per CPU-second.
func BenchmarkLokiLines(b *testing.B) {
	e := newEnv(b, logtrace.Config{})
	bodies := make([][]byte, 8)
	now := time.Now()
	for i := range bodies {
		req := &push.PushRequest{}
		for s := range 20 {
			st := push.Stream{Labels: fmt.Sprintf(`{app="app-%d", namespace="shop", pod="pod-%d-abcde", level="info"}`, s, s)}
			for l := range 50 {
				st.Entries = append(st.Entries, push.Entry{Timestamp: now.Add(time.Duration(i*1000+l) * time.Microsecond),
					Line: fmt.Sprintf(`level=info ts=2026-12-01T21:00:00Z caller=handler.go:%d msg="request served" path=/api/v1/items/%d status=200 dur=1.2ms`, l, i)})
			}
			req.Streams = append(req.Streams, st)
		}
		raw, _ := req.Marshal()
		bodies[i] = snappy.Encode(nil, raw)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	lines := 0
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest("POST", "/loki/api/v1/push", bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer tok-eu-1")
		rec := httptest.NewRecorder()
		e.mux.ServeHTTP(rec, req)
		if rec.Code != 204 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		lines += 1000
	}
	b.ReportMetric(float64(lines)/(cpuTime()-cpu0).Seconds(), "lines/cpu-s")
}
