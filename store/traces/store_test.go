package traces

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func testTraces(id pcommon.TraceID, service string, spans int, start time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	rs.Resource().Attributes().PutStr("cluster", "eu-1")
	ss := rs.ScopeSpans().AppendEmpty()
	for i := 0; i < spans; i++ {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(id)
		sp.SetSpanID(pcommon.SpanID{byte(i + 1), 1})
		sp.SetName("op")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(10 * time.Millisecond)))
	}
	return td
}

// A trace pushed in parts comes back whole, also after a restart that
// rebuilds the index from disk.
func TestTraceStoreRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	s, err := Open(dir, Config{}, nil, logger)
	require.NoError(t, err)
	id := pcommon.TraceID{1, 2, 3}
	other := pcommon.TraceID{9}
	now := time.Now()
	ctx := context.Background()
	require.NoError(t, s.PushTraces(ctx, testTraces(id, "checkout", 2, now)))
	require.NoError(t, s.PushTraces(ctx, testTraces(other, "payments", 1, now)))
	require.NoError(t, s.PushTraces(ctx, testTraces(id, "checkout", 3, now)))
	got, err := s.Trace(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 5, got.SpanCount())
	require.NoError(t, s.Close())

	s, err = Open(dir, Config{}, nil, logger)
	require.NoError(t, err)
	defer s.Close()
	got, err = s.Trace(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 5, got.SpanCount(), "after reopen")
	res, err := s.Search(ctx, now.Add(-time.Minute).UnixMilli(), now.Add(time.Minute).UnixMilli(),
		[]Condition{{Tag: "resource.service.name", Value: "payments"}}, 10)
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Contains(t, s.TagValues("service.name"), "checkout")
}

func TestTraceStoreConfigErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxBytes: -1}, "max_bytes"},
		{Config{Retention: -1}, "retention"},
		{Config{MaxTraces: -1}, "max_traces"},
	} {
		require.ErrorContains(t, c.cfg.Validate(), c.want)
	}
}
