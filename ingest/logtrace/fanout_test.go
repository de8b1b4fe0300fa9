package logtrace

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/store/seglog"
)

// flakySink fails its first failN pushes the way a full disk fails a store
// (a retryable seglog.WriteError), then stores.
type flakySink struct {
	mu     sync.Mutex
	failN  int
	lines  int
	spans  int
	pushes int
}

func (f *flakySink) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pushes++
	if f.failN > 0 {
		f.failN--
		return &seglog.WriteError{Dir: "test", Err: errors.New("no space left on device")}
	}
	return nil
}

func (f *flakySink) PushLogs(_ context.Context, streams []push.Stream) error {
	if err := f.fail(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range streams {
		f.lines += len(s.Entries)
	}
	return nil
}

func (f *flakySink) PushTraces(_ context.Context, td ptrace.Traces) error {
	if err := f.fail(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spans += td.SpanCount()
	return nil
}

func newFanoutHub(t *testing.T, cfg Config, logs []LogsSink, traces []TracesSink) *Hub {
	t.Helper()
	reg, err := fleet.NewRegistry(fleet.Config{})
	require.NoError(t, err)
	sig, err := New(cfg, reg, nil, logs, traces, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	return sig
}

func testStreams(now time.Time, line string) []push.Stream {
	return []push.Stream{{Labels: `{app="a", cluster="dev-1"}`, Entries: []push.Entry{{Timestamp: now, Line: line}, {Timestamp: now.Add(time.Millisecond), Line: line}}}}
}

// TestLogFanoutRetryStoresOnce: the second sink fails once after the first
// stored the push; the client gets a retryable 503, and its retry is stored
// by the second sink only: each sink ends with the lines once.
func TestLogFanoutRetryStoresOnce(t *testing.T) {
	first, second := &flakySink{}, &flakySink{failN: 1}
	sig := newFanoutHub(t, Config{}, []LogsSink{first, second}, nil)
	now := time.Now()
	err := sig.PushLogs(context.Background(), nil, testStreams(now, "x"))
	require.Error(t, err)
	require.Equal(t, http.StatusServiceUnavailable, core.ErrorStatus(err), "retryable")
	require.Equal(t, 2, first.lines)
	require.Zero(t, second.lines)

	require.NoError(t, sig.PushLogs(context.Background(), nil, testStreams(now, "x")), "the retry")
	require.Equal(t, 2, first.lines, "not stored twice")
	require.Equal(t, 2, second.lines)
	require.Equal(t, 1, first.pushes)

	// Another push, even with the same content later, goes to every sink.
	require.NoError(t, sig.PushLogs(context.Background(), nil, testStreams(now, "x")))
	require.Equal(t, 4, first.lines)
	require.Equal(t, 4, second.lines)
}

func testTraces(name string, now time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("cluster", "dev-1")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetName(name)
	sp.SetTraceID([16]byte{1})
	sp.SetSpanID([8]byte{1})
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	return td
}

func TestTraceFanoutRetryStoresOnce(t *testing.T) {
	first, second := &flakySink{failN: 1}, &flakySink{}
	sig := newFanoutHub(t, Config{}, nil, []TracesSink{first, second})
	now := time.Now() // the retry resends the same export
	err := sig.PushTraces(context.Background(), nil, testTraces("op", now))
	require.Equal(t, http.StatusServiceUnavailable, core.ErrorStatus(err))
	require.Equal(t, 1, second.spans)
	require.NoError(t, sig.PushTraces(context.Background(), nil, testTraces("op", now)))
	require.Equal(t, 1, first.spans)
	require.Equal(t, 1, second.spans, "not stored twice")
}

// TestOversizedPushRefusedBeforeAnySink: a push no on-disk record could
// hold is a 413 naming the limit, and no sink stores any of it.
func TestOversizedPushRefusedBeforeAnySink(t *testing.T) {
	first := &flakySink{}
	sig := newFanoutHub(t, Config{MaxLineBytes: 64 << 20}, []LogsSink{first}, nil)
	err := sig.PushLogs(context.Background(), nil, testStreams(time.Now(), strings.Repeat("x", MaxPushBytes/2)))
	require.Equal(t, http.StatusRequestEntityTooLarge, core.ErrorStatus(err))
	require.ErrorContains(t, err, "58720256 bytes")
	require.Zero(t, first.pushes)
}
