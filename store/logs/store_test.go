package logs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

func count(t *testing.T, s *Store, ms ...*labels.Matcher) int {
	n := 0
	require.NoError(t, s.Select(context.Background(), 0, time.Now().Add(time.Hour).UnixNano(), ms, false,
		func(labels.Labels, string, *push.Entry) error { n++; return nil }))
	return n
}

func TestReopenAndSizeLimit(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(dir, Config{MaxBytes: 64 << 10}, nil, logger)
	require.NoError(t, err)
	now := time.Now()
	line := strings.Repeat("x", 100)
	for i := range 800 {
		require.NoError(t, s.PushLogs(context.Background(), []push.Stream{{
			Labels:  fmt.Sprintf(`{cluster="eu-1", app="a%d"}`, i%3),
			Entries: []push.Entry{{Timestamp: now.Add(time.Duration(i) * time.Millisecond), Line: line}},
		}}))
	}
	all := labels.MustNewMatcher(labels.MatchEqual, "cluster", "eu-1")
	n := count(t, s, all)
	require.Less(t, n, 800, "size limit drops the oldest data")
	require.Greater(t, n, 100)
	require.NoError(t, s.Close())

	s, err = Open(dir, Config{MaxBytes: 64 << 10}, nil, logger)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, n, count(t, s, all), "everything acknowledged before the restart is still there")
	require.Len(t, s.Series(0, time.Now().Add(time.Hour).UnixNano(), nil), 3)
	require.InDelta(t, n/3, count(t, s, labels.MustNewMatcher(labels.MatchEqual, "app", "a1")), 1, "selector")
}

// TestMaxStreamsBoundsTheIndex: the index never holds more than max_streams
// streams; the one written longest ago leaves first, and is found again
// (with its older lines) once it is written again.
func TestMaxStreamsBoundsTheIndex(t *testing.T) {
	s, err := Open(t.TempDir(), Config{MaxStreams: 3}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer s.Close()
	now := time.Now()
	push1 := func(app string, i int) {
		require.NoError(t, s.PushLogs(context.Background(), []push.Stream{{
			Labels:  fmt.Sprintf(`{cluster="eu-1", app=%q}`, app),
			Entries: []push.Entry{{Timestamp: now.Add(time.Duration(i) * time.Millisecond), Line: "l"}},
		}}))
	}
	for i, app := range []string{"a", "b", "c", "a", "d", "e"} {
		push1(app, i)
	}
	series := s.Series(0, now.Add(time.Hour).UnixNano(), nil)
	require.Len(t, series, 3)
	var apps []string
	for _, ls := range series {
		apps = append(apps, ls.Get("app"))
	}
	require.ElementsMatch(t, []string{"a", "d", "e"}, apps, "b and c were written longest ago")
	require.Equal(t, 2.0, testutil.ToFloat64(s.evicted))
	require.Zero(t, count(t, s, labels.MustNewMatcher(labels.MatchEqual, "app", "b")))

	push1("b", 10)
	require.Equal(t, 2, count(t, s, labels.MustNewMatcher(labels.MatchEqual, "app", "b")), "its older line is on disk and found again")
	require.Len(t, s.Series(0, now.Add(time.Hour).UnixNano(), nil), 3)
}
