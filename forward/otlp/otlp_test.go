package otlp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/fleetgate/fleetgate/forward/queue"
)

func traces(i byte) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("k8s.cluster.name", "eu-1")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{i})
	sp.SetSpanID(pcommon.SpanID{i})
	sp.SetName("op")
	return td
}

func TestForwardTracesAcrossDestinationRestart(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var mu sync.Mutex
	var got []pcommon.TraceID
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := ptraceotlp.NewExportRequest()
		if r.URL.Path != "/v1/traces" || req.UnmarshalProto(body) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		mu.Lock()
		got = append(got, req.Traces().ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID())
		mu.Unlock()
		b, _ := ptraceotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()

	reg := prometheus.NewRegistry()
	m, err := queue.NewMetrics(reg)
	require.NoError(t, err)
	fw, err := New(Config{Name: "tempo", URL: "http://" + addr + "/v1/traces", MinBackoff: model.Duration(10 * time.Millisecond), MaxBackoff: model.Duration(50 * time.Millisecond)}, t.TempDir(), m, logger)
	require.NoError(t, err)
	defer fw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = fw.Run(ctx) }()
	// The delivery loop persists its cursor: stop it before the directory goes.
	defer func() { cancel(); <-runDone }()
	require.NoError(t, fw.PushTraces(ctx, traces(1)))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return fw.Pending() == 0 }, 5*time.Second, 10*time.Millisecond)
	srv.Close()
	require.NoError(t, fw.PushTraces(ctx, traces(2)))
	require.NoError(t, fw.PushTraces(ctx, traces(3)))
	require.Eventually(t, func() bool { return counter(reg, "fleetgate_forward_failed_total") > 0 }, 5*time.Second, 5*time.Millisecond,
		"delivery tried and failed while the destination is down")
	// The address of a server just closed may take a moment to be free.
	require.Eventually(t, func() bool {
		l, err := net.Listen("tcp", addr)
		ln = l
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "listening on %s", addr)
	srv = &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	// Delivery is at least once: a request cut by the outage may arrive twice.
	uniq := func() []pcommon.TraceID {
		mu.Lock()
		defer mu.Unlock()
		var out []pcommon.TraceID
		for _, id := range got {
			if len(out) == 0 || out[len(out)-1] != id {
				out = append(out, id)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(uniq()) == 3 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []pcommon.TraceID{{1}, {2}, {3}}, uniq(), "in order, nothing lost")
}

// counter is the sum of the counter name's series in g.
// It runs inside require.Eventually's goroutine: a gathering error makes
// it -1 (never the value waited for) instead of failing from there.
func counter(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return -1
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
