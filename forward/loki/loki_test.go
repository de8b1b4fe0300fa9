package loki

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/forward/queue"
)

// lokiServer decodes pushes with the Loki push types.
type lokiServer struct {
	mu      sync.Mutex
	got     []push.Stream
	srv     *http.Server
	refuse  bool
	refused int // requests answered 503
}

func (s *lokiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	raw, err := snappy.Decode(nil, body)
	if err != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "bad body", 400)
		return
	}
	var req push.PushRequest
	if err := req.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse {
		s.refused++
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	s.got = append(s.got, req.Streams...)
	w.WriteHeader(204)
}

func (s *lokiServer) start(t *testing.T, addr string) string {
	var ln net.Listener
	// The address of a server just closed may take a moment to be free.
	require.Eventually(t, func() bool {
		l, err := net.Listen("tcp", addr)
		ln = l
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "listening on %s", addr)
	s.srv = &http.Server{Handler: s}
	go func() { _ = s.srv.Serve(ln) }()
	return ln.Addr().String()
}

func (s *lokiServer) received() []push.Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]push.Stream(nil), s.got...)
}

func batch(i int) []push.Stream {
	return []push.Stream{{Labels: fmt.Sprintf(`{cluster="eu-1", n="%d"}`, i), Entries: []push.Entry{
		{Timestamp: time.Unix(1700000000+int64(i), 0).UTC(), Line: fmt.Sprintf("line %d", i), StructuredMetadata: push.LabelsAdapter{{Name: "trace_id", Value: "abc"}}},
	}}}
}

func TestForwardSurvivesDestinationAndSelfRestart(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	dest := &lokiServer{}
	addr := dest.start(t, "127.0.0.1:0")
	cfg := Config{Name: "loki-a", URL: "http://" + addr + "/loki/api/v1/push", MinBackoff: model.Duration(10 * time.Millisecond), MaxBackoff: model.Duration(50 * time.Millisecond)}
	require.NoError(t, cfg.Validate())
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	m, err := queue.NewMetrics(reg)
	require.NoError(t, err)

	fw, err := New(cfg, dir, m, logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fw.Run(ctx) }()
	var sent []push.Stream
	for i := range 3 {
		require.NoError(t, fw.PushLogs(context.Background(), batch(i)))
		sent = append(sent, batch(i)...)
	}
	require.Eventually(t, func() bool { return len(dest.received()) == 3 && fw.Pending() == 0 }, 5*time.Second, 10*time.Millisecond)

	// Destination down: pushes are still accepted (queued on disk).
	require.NoError(t, dest.srv.Close())
	for i := 3; i < 6; i++ {
		require.NoError(t, fw.PushLogs(context.Background(), batch(i)))
		sent = append(sent, batch(i)...)
	}
	require.Eventually(t, func() bool { return counter(reg, "fleetgate_forward_failed_total") > 0 }, 5*time.Second, 5*time.Millisecond,
		"delivery tried and failed while the destination is down")
	// fleetgate restarts while the destination is down.
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, fw.Close())
	fw, err = New(cfg, dir, m, logger)
	require.NoError(t, err)
	require.Positive(t, fw.Pending())
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- fw.Run(ctx) }()
	// Destination overloaded (503), then healthy again on the same address.
	dest.refuse = true
	dest.start(t, addr)
	require.Eventually(t, func() bool { dest.mu.Lock(); defer dest.mu.Unlock(); return dest.refused > 0 }, 5*time.Second, 5*time.Millisecond,
		"a 503 is answered")
	dest.mu.Lock()
	dest.refuse = false
	dest.mu.Unlock()
	// Delivery is at least once: drop consecutive duplicates of a request cut by an outage.
	uniq := func() []push.Stream {
		var out []push.Stream
		for _, s := range dest.received() {
			if len(out) == 0 || out[len(out)-1].Labels != s.Labels {
				out = append(out, s)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(uniq()) == 6 }, 10*time.Second, 10*time.Millisecond)
	got := uniq()
	require.Len(t, got, len(sent))
	for i := range sent {
		require.Equal(t, sent[i].Labels, got[i].Labels)
		require.Equal(t, sent[i].Entries[0].Line, got[i].Entries[0].Line)
		require.True(t, sent[i].Entries[0].Timestamp.Equal(got[i].Entries[0].Timestamp))
		require.Equal(t, sent[i].Entries[0].StructuredMetadata, got[i].Entries[0].StructuredMetadata)
	}
	require.Eventually(t, func() bool { return fw.Pending() == 0 }, 5*time.Second, 10*time.Millisecond)
	dest.srv.Close()
	fw.Close()
}

func TestRefusedIsDropped(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var mu sync.Mutex
	calls := 0
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		http.Error(w, "entry too far behind", 400)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fw, err := New(Config{Name: "x", URL: "http://" + ln.Addr().String()}, t.TempDir(), nil, logger)
	require.NoError(t, err)
	defer fw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = fw.Run(ctx) }()
	// The delivery loop persists its cursor: stop it before the directory goes.
	defer func() { cancel(); <-runDone }()
	require.NoError(t, fw.PushLogs(ctx, batch(1)))
	require.Eventually(t, func() bool { return fw.Pending() == 0 }, 5*time.Second, 10*time.Millisecond)
	mu.Lock()
	require.Equal(t, 1, calls) // not retried
	mu.Unlock()
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
