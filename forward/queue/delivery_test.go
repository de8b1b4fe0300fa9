package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// destination is an HTTP receiver that answers each attempt from a script
// (then 204) and records what it accepted and when each attempt came.
type destination struct {
	mu       sync.Mutex
	script   []int // status per attempt; 0 closes the connection without an answer
	refuse   map[string]int
	attempts []time.Time
	bodies   []string // every attempt's body
	accepted []string // bodies answered 2xx
}

func (d *destination) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attempts = append(d.attempts, time.Now())
	d.bodies = append(d.bodies, string(b))
	status := http.StatusNoContent
	if code, ok := d.refuse[string(b)]; ok {
		status = code
	} else if len(d.script) > 0 {
		status, d.script = d.script[0], d.script[1:]
	}
	if status == 0 {
		// A connection error: the request was sent, no answer comes back.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if status/100 == 2 {
		d.accepted = append(d.accepted, string(b))
	}
	w.WriteHeader(status)
}

func (d *destination) snapshot() (attempts []time.Time, bodies, accepted []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.attempts), slices.Clone(d.bodies), slices.Clone(d.accepted)
}

// runQueue opens an HTTP queue to d and runs it until the test ends.
func runQueue(t *testing.T, d http.Handler, opts Options) (*Queue, *Metrics) {
	t.Helper()
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	m, err := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	cfg := HTTPConfig{Name: "dest", URL: srv.URL, MinBackoff: mdur(opts.MinBackoff), MaxBackoff: mdur(opts.MaxBackoff), QueueMaxBytes: opts.MaxBytes}
	q, err := OpenHTTP("test", cfg, map[string]string{"Content-Type": "text/plain"}, t.TempDir(), m, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		require.NoError(t, q.Close())
	})
	return q, m
}

// TestTransientErrorsAreRetriedWithBackoff: 5xx, 429 and a dropped
// connection are retried, with a delay that doubles from min_backoff up to
// max_backoff; the record is delivered once, and the next record after it.
func TestTransientErrorsAreRetriedWithBackoff(t *testing.T) {
	const minB, maxB = 20 * time.Millisecond, 50 * time.Millisecond
	d := &destination{script: []int{503, 0, 500, 429, 502}}
	q, m := runQueue(t, d, Options{MinBackoff: minB, MaxBackoff: maxB})
	require.NoError(t, q.Enqueue([]byte("a")))
	require.NoError(t, q.Enqueue([]byte("b")))

	require.Eventually(t, func() bool { return testutil.ToFloat64(m.sent.WithLabelValues("test/dest")) == 2 },
		10*time.Second, 5*time.Millisecond)
	attempts, bodies, accepted := d.snapshot()
	require.Equal(t, []string{"a", "a", "a", "a", "a", "a", "b"}, bodies, "a retried until accepted, then b")
	require.Equal(t, []string{"a", "b"}, accepted, "each delivered once")
	require.Equal(t, 5.0, testutil.ToFloat64(m.retries.WithLabelValues("test/dest")))
	require.Equal(t, 5.0, testutil.ToFloat64(m.failed.WithLabelValues("test/dest")))
	require.Zero(t, testutil.CollectAndCount(m.dropped), "nothing dropped")
	// Backoff: 20, 40, then capped at 50ms. Only lower bounds: a slow
	// machine may take longer, never shorter.
	for i, want := range []time.Duration{minB, 2 * minB, maxB, maxB, maxB} {
		require.GreaterOrEqual(t, attempts[i+1].Sub(attempts[i]), want, "delay before attempt %d", i+2)
	}
	require.Eventually(t, func() bool { return q.Pending() == 0 }, 5*time.Second, 5*time.Millisecond)
}

// TestPermanentErrorIsDroppedAndDoesNotBlock: a 4xx (other than 429) is
// not retried: the record is dropped and counted, and the records behind it
// are delivered.
func TestPermanentErrorIsDroppedAndDoesNotBlock(t *testing.T) {
	d := &destination{refuse: map[string]int{"bad": http.StatusBadRequest, "huge": http.StatusRequestEntityTooLarge}}
	q, m := runQueue(t, d, Options{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	for _, r := range []string{"bad", "one", "huge", "two"} {
		require.NoError(t, q.Enqueue([]byte(r)))
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(m.sent.WithLabelValues("test/dest")) == 2 },
		10*time.Second, 5*time.Millisecond)
	_, bodies, accepted := d.snapshot()
	require.Equal(t, []string{"bad", "one", "huge", "two"}, bodies, "each refused record tried once")
	require.Equal(t, []string{"one", "two"}, accepted)
	require.Equal(t, 2.0, testutil.ToFloat64(m.dropped.WithLabelValues("test/dest", "refused")))
	require.Zero(t, testutil.ToFloat64(m.retries.WithLabelValues("test/dest")))
	require.Eventually(t, func() bool { return q.Pending() == 0 }, 5*time.Second, 5*time.Millisecond)
}

// TestHTTPSenderClassifies what is retried and what is refused for good,
// as Prometheus remote-write and OTLP/HTTP do.
func TestHTTPSenderClassifies(t *testing.T) {
	for _, tc := range []struct {
		status    int
		permanent bool
	}{
		{200, false}, {204, false},
		{400, true}, {401, true}, {403, true}, {404, true}, {413, true},
		{429, false}, {500, false}, {502, false}, {503, false}, {504, false},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tc.status) }))
			defer srv.Close()
			s, err := NewHTTPSender(HTTPConfig{Name: "dest", URL: srv.URL}, nil)
			require.NoError(t, err)
			err = s.Post(context.Background(), []byte("x"))
			if tc.status/100 == 2 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			var pe *PermanentError
			require.Equal(t, tc.permanent, errors.As(err, &pe), "%v", err)
		})
	}
	// Nothing listening: a connection error, retried.
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	s, err := NewHTTPSender(HTTPConfig{Name: "dest", URL: srv.URL}, nil)
	require.NoError(t, err)
	err = s.Post(context.Background(), []byte("x"))
	require.Error(t, err)
	var pe *PermanentError
	require.False(t, errors.As(err, &pe), "%v", err)
}

// TestFullQueueDropsOldest: while the destination is down the queue keeps
// accepting records; over queue_max_bytes its oldest segments are deleted
// and counted (fleetgate_forward_dropped_total{reason="queue_full"}), as
// documented on Options.MaxBytes. Once the destination is back what is left
// is delivered in order, newest record included, none twice.
func TestFullQueueDropsOldest(t *testing.T) {
	const maxBytes = 16 << 10 // segments of 2 KiB
	var (
		mu   sync.Mutex
		down = true
		got  []int
	)
	send := func(_ context.Context, rec []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("destination down")
		}
		n, err := strconv.Atoi(string(rec[:8]))
		if err != nil {
			return &PermanentError{err}
		}
		got = append(got, n)
		return nil
	}
	m, err := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	q, err := Open("full", t.TempDir(), Options{MaxBytes: maxBytes, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		send, m, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
		require.NoError(t, q.Close())
	}()

	const n = 200 // 200 × ~500 bytes: about six times the bound
	pad := make([]byte, 490)
	for i := range n {
		require.NoError(t, q.Enqueue(append([]byte(fmt.Sprintf("%08d", i)), pad...)), "a full queue still accepts")
		require.LessOrEqual(t, q.Pending(), int64(maxBytes+2<<10), "the bound holds (give or take the segment being written)")
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(m.failed.WithLabelValues("full")) > 0 }, 5*time.Second, time.Millisecond)

	mu.Lock()
	down = false
	mu.Unlock()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == n-1
	}, 10*time.Second, 5*time.Millisecond)
	mu.Lock()
	delivered := slices.Clone(got)
	mu.Unlock()
	require.True(t, slices.IsSorted(delivered), "in order: %v", delivered)
	require.Equal(t, len(delivered), len(slices.Compact(slices.Clone(delivered))), "none twice")
	require.Less(t, len(delivered), n, "the queue did not grow past its bound")
	// The newest records are all there: what is missing is the oldest.
	tail := delivered[1:] // the first may be the record held in retry when its segment went
	for i := 1; i < len(tail); i++ {
		require.Equal(t, tail[i-1]+1, tail[i], "no gap after the oldest kept record: %v", delivered)
	}
	require.Positive(t, testutil.ToFloat64(m.dropped.WithLabelValues("full", "queue_full")), "drops are counted")
	require.Eventually(t, func() bool { return q.Pending() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func mdur(d time.Duration) model.Duration { return model.Duration(d) }

// TestDropsBeforeRunAreCounted: segments dropped because the queue filled
// up before the delivery loop started are counted too (they were not: Run
// took the count at its start as its baseline).
func TestDropsBeforeRunAreCounted(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	var mu sync.Mutex
	var got []string
	send := func(_ context.Context, rec []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(rec[:8]))
		return nil
	}
	q, err := Open("early", t.TempDir(), Options{MaxBytes: 16 << 10}, send, m, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	pad := make([]byte, 490)
	for i := range 200 {
		require.NoError(t, q.Enqueue(append([]byte(fmt.Sprintf("%08d", i)), pad...)))
	}
	dropped := q.q.DroppedSegments()
	require.Positive(t, dropped)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 && got[len(got)-1] == "00000199" },
		5*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, q.Close())
	require.Equal(t, float64(dropped), testutil.ToFloat64(m.dropped.WithLabelValues("early", "queue_full")))
}
