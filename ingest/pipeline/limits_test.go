package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

// twoClusters is eu-1 (with the given limit overrides) and us-1 (defaults
// of lim) over a real TSDB whose series lifecycle hook is the series limiter.
func twoClusters(t testing.TB, lim fleet.Limits, eu *fleet.LimitOverrides) (*Pipeline, *tsdb.DB, *fleet.Registry, *SeriesLimiter) {
	t.Helper()
	t.Setenv("FG_LIM_EU1", "tok-eu-1")
	t.Setenv("FG_LIM_US1", "tok-us-1")
	reg, err := fleet.NewRegistry(fleet.Config{Limits: &lim, Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_EU1"}, Limits: eu},
		{Name: "us-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_US1"}},
	}})
	require.NoError(t, err)
	sl, err := NewSeriesLimiter(reg, nil)
	require.NoError(t, err)
	opts := tsdb.DefaultOptions()
	opts.SeriesLifecycleCallback = sl
	dir := t.TempDir()
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, opts, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	sl.Enforce()
	p, err := New(Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return p, db, reg, sl
}

// Samples and histograms more than ingest.max_future ahead are refused (400
// naming the series and the bound) and never reach the TSDB; far-future
// exemplars are dropped without failing the request, as Prometheus 3.16's
// receiver drops them (ingest/promrw's recorded differential test); a
// far-future sample from eu-1 does not stop us-1's current samples.
func TestMaxFuture(t *testing.T) {
	now := time.Now()
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	for _, tc := range []struct {
		name    string
		series  Series
		wantErr string // "" = accepted
		stored  int    // samples and histograms in the TSDB after
	}{
		{"now", Series{Samples: []Sample{{T: ms(0), V: 1}}}, "", 1},
		{"9m ahead", Series{Samples: []Sample{{T: ms(9 * time.Minute), V: 1}}}, "", 1},
		{"11m ahead", Series{Samples: []Sample{{T: ms(11 * time.Minute), V: 1}}}, "1 samples from", 0},
		{"a year ahead", Series{Samples: []Sample{{T: ms(365 * 24 * time.Hour), V: 1}}}, "ahead of now", 0},
		{"MaxInt64", Series{Samples: []Sample{{T: math.MaxInt64, V: 1}}}, "9223372036854775807 ms since the epoch", 0},
		{"one of two", Series{Samples: []Sample{{T: ms(-time.Second), V: 1}, {T: ms(time.Hour), V: 2}}}, "1 samples from", 1},
		// Both kinds dropped, the rest kept in order; the message names the earliest.
		{"mixed", Series{Samples: []Sample{{T: ms(2 * time.Hour), V: 1}, {T: ms(-time.Second), V: 2}, {T: ms(time.Hour), V: 3}, {T: ms(0), V: 4}},
			Histograms: []HistogramSample{{T: ms(30 * time.Minute), H: &histogram.Histogram{Count: 1, Sum: 1, ZeroCount: 1}}}},
			"3 samples from " + formatMillis(ms(30*time.Minute)) + " on", 2},
		{"histogram", Series{Histograms: []HistogramSample{{T: ms(time.Hour), H: &histogram.Histogram{Count: 1, Sum: 1, ZeroCount: 1}}}}, "1 samples from", 0},
		{"exemplar", Series{Samples: []Sample{{T: ms(0), V: 1}}, Exemplars: []exemplar.Exemplar{{Labels: labels.FromStrings("trace_id", "x"), Ts: ms(time.Hour), HasTs: true, Value: 1}}},
			"", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, db, reg, _ := twoClusters(t, fleet.DefaultLimits(), nil)
			eu := reg.Get("eu-1")
			s := tc.series
			s.Labels = labels.FromStrings("__name__", "m", "job", "x")
			b := p.Begin(context.Background(), eu)
			require.NoError(t, b.Add(&s))
			w, err := b.Commit()
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err))
				require.Contains(t, err.Error(), tc.wantErr)
				require.Contains(t, err.Error(), `{__name__="m", cluster="eu-1", job="x"}`, "names the series")
				require.Contains(t, err.Error(), "ingest.max_future (10m)", "names the bound")
				require.Contains(t, eu.Status(now).Rejections, "too_far_in_future")
			}
			require.Equal(t, tc.stored, w.Samples+w.Histograms)
			if tc.name == "exemplar" {
				require.Zero(t, w.Exemplars, "the far-future exemplar is not written")
				require.Contains(t, eu.Status(now).Rejections, "invalid_exemplar")
			}
			n := 0
			for _, v := range selectAll(t, db) {
				n += len(v)
			}
			require.Equal(t, tc.stored, n)
			require.LessOrEqual(t, db.Head().MaxTime(), ms(10*time.Minute), "nothing past the bound reached the head")

			// The other cluster keeps writing current samples.
			require.NoError(t, appendOne(t, p, reg.Get("us-1"), labels.FromStrings("__name__", "up"), ms(0)+1, 1))
		})
	}
}

// Over limits.max_series a new series is refused with 400 naming the limit;
// the cluster's existing series and other clusters keep being accepted; head
// garbage collection frees the budget; WAL replay counts but never refuses.
func TestSeriesLimit(t *testing.T) {
	p, db, reg, sl := twoClusters(t, fleet.DefaultLimits(), &fleet.LimitOverrides{MaxSeries: intp(3)})
	eu, us := reg.Get("eu-1"), reg.Get("us-1")
	series := func(i int) labels.Labels { return labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)) }
	for i := range 3 {
		require.NoError(t, appendOne(t, p, eu, series(i), 1000, 1))
	}
	n, _ := sl.ActiveSeries("eu-1")
	require.EqualValues(t, 3, n)

	err := appendOne(t, p, eu, series(3), 1000, 1)
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err))
	require.Contains(t, err.Error(), `series {__name__="m", cluster="eu-1", i="3"}`)
	require.Contains(t, err.Error(), `cluster "eu-1" is at its limit of 3 active series (limits.max_series)`)
	require.EqualValues(t, 1, eu.Status(time.Now()).Rejections["series_limit"])

	// A request mixing known and new series: the known ones are stored.
	b := p.Begin(context.Background(), eu)
	for i := range 5 {
		require.NoError(t, b.Add(&Series{Labels: series(i), Samples: []Sample{{T: 2000, V: 2}}}))
	}
	w, err := b.Commit()
	require.Error(t, err)
	require.Equal(t, 3, w.Samples)
	require.Len(t, selectAll(t, db), 3)

	// Another cluster has its own budget (the default: unlimited).
	for i := range 10 {
		require.NoError(t, appendOne(t, p, us, series(i), 1000, 1))
	}
	n, _ = sl.ActiveSeries("us-1")
	require.EqualValues(t, 10, n)

	// Garbage collection of the head gives the budget back.
	require.NoError(t, db.Head().Truncate(1_000_000))
	n, _ = sl.ActiveSeries("eu-1")
	require.EqualValues(t, 0, n)
	require.NoError(t, appendOne(t, p, eu, series(7), 2_000_000, 1))

	// Replaying the WAL counts every series, and refuses none, even over the limit.
	dir := db.Dir()
	require.NoError(t, db.Close())
	lim := fleet.DefaultLimits()
	reg2, err := fleet.NewRegistry(fleet.Config{Limits: &lim, Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_EU1"}, Limits: &fleet.LimitOverrides{MaxSeries: intp(1)}},
	}})
	require.NoError(t, err)
	sl2, err := NewSeriesLimiter(reg2, nil)
	require.NoError(t, err)
	opts := tsdb.DefaultOptions()
	opts.SeriesLifecycleCallback = sl2
	// Not enforcing until Open returns, as main does: eu-1's 4 series are
	// replayed although its limit is now 1.
	db2, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, opts, nil)
	require.NoError(t, err)
	defer db2.Close()
	n, _ = sl2.ActiveSeries("eu-1")
	require.EqualValues(t, 4, n, "the WAL holds the 3 series garbage-collected since and the new one")
	n, _ = sl2.ActiveSeries("us-1")
	require.EqualValues(t, 10, n)
}

// Label count and length limits come from the cluster's own limits.
func TestLabelLimitsPerCluster(t *testing.T) {
	p, db, reg, _ := twoClusters(t, fleet.DefaultLimits(), &fleet.LimitOverrides{MaxLabelsPerSeries: intp(3), MaxLabelValueLength: intp(5)})
	eu, us := reg.Get("eu-1"), reg.Get("us-1")
	many := labels.FromStrings("__name__", "m", "a", "1", "b", "2", "c", "3")
	long := labels.FromStrings("__name__", "m", "a", "123456")
	for _, tc := range []struct {
		c       *fleet.Cluster
		ls      labels.Labels
		wantErr string
	}{
		{eu, many, "has 4 labels, more than limits.max_labels_per_series (3)"},
		{eu, long, `value of label "a" is 6 bytes, longer than limits.max_label_value_length (5)`},
		{us, many, ""},
		{us, long, ""},
		{us, labels.FromStrings("__name__", "m", strings.Repeat("n", 1025), "v"), "is 1025 bytes, longer than limits.max_label_name_length (1024)"},
	} {
		err := appendOne(t, p, tc.c, tc.ls, 1000, 1)
		if tc.wantErr == "" {
			require.NoError(t, err)
			continue
		}
		require.Error(t, err)
		require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err))
		require.Contains(t, err.Error(), tc.wantErr)
	}
	require.Len(t, selectAll(t, db), 2, "us-1's two series")
}

// Only a write that stored something makes a cluster fresh: all samples
// rejected, or fleetgate's own derived metrics, leave its last write alone.
func TestFreshnessOnlyFromStoredWrites(t *testing.T) {
	p, _, reg, _ := twoClusters(t, fleet.DefaultLimits(), nil)
	eu := reg.Get("eu-1")
	future := time.Now().Add(time.Hour).UnixMilli()
	require.Error(t, appendOne(t, p, eu, labels.FromStrings("__name__", "m"), future, 1))
	require.True(t, eu.LastWrite().IsZero(), "a request whose samples were all refused is not a write")

	b := p.BeginInternal(context.Background(), eu)
	require.NoError(t, b.Add(&Series{Labels: labels.FromStrings("__name__", "fleetgate_log_lines_total"), Samples: []Sample{{T: time.Now().UnixMilli(), V: 1}}}))
	w, err := b.Commit()
	require.NoError(t, err)
	require.Equal(t, 1, w.Samples)
	require.True(t, eu.LastWrite().IsZero(), "derived metrics are not the cluster's writes")

	require.NoError(t, appendOne(t, p, eu, labels.FromStrings("__name__", "m"), time.Now().UnixMilli(), 1))
	require.False(t, eu.LastWrite().IsZero())
}

// A 400 for many series with thousands of labels lists the first problems,
// each abbreviated, and counts the rest.
func TestErrorBodiesCapped(t *testing.T) {
	p, _, reg, _ := twoClusters(t, fleet.DefaultLimits(), nil)
	b := p.Begin(context.Background(), reg.Get("eu-1"))
	for i := range 100 {
		sb := labels.NewScratchBuilder(10_001)
		sb.Add("__name__", fmt.Sprintf("m%d", i))
		for j := range 10_000 {
			sb.Add(fmt.Sprintf("label_%05d", j), strings.Repeat("v", 10))
		}
		sb.Sort()
		require.NoError(t, b.Add(&Series{Labels: sb.Labels(), Samples: []Sample{{T: 1000, V: 1}}}))
	}
	_, err := b.Commit()
	require.Error(t, err)
	msg := err.Error()
	require.Less(t, len(msg), core.MaxProblems*core.MaxProblemBytes+200)
	require.Contains(t, msg, "100 samples rejected")
	require.Contains(t, msg, "; and 90 more")
	require.Contains(t, msg, "more labels}")
	require.Contains(t, msg, "has 10001 labels, more than limits.max_labels_per_series (64)")
}

func TestAbbrevAndTruncate(t *testing.T) {
	require.Equal(t, `{__name__="up", job="a"}`, core.Abbrev(labels.FromStrings("__name__", "up", "job", "a")))
	long := core.Abbrev(labels.FromStrings("__name__", "up", "a", strings.Repeat("x", 5000)))
	require.Less(t, len(long), 200)
	require.Contains(t, long, "…")
	require.Equal(t, "abc", core.Truncate("abc", 3))
	require.Equal(t, "a…", core.Truncate("abcdef", 4))
	require.Equal(t, "…", core.Truncate("ééé", 4), "never splits a rune")
	var p core.Problems
	require.NoError(t, p.Err())
	for i := range 12 {
		p.Add(fmt.Errorf("problem %d", i))
	}
	require.Equal(t, "problem 0; problem 1; problem 2; problem 3; problem 4; problem 5; problem 6; problem 7; problem 8; problem 9; and 2 more", p.Err().Error())
}

// Forward-only mode: without a storage series hook the pipeline tracks each
// limited cluster's series itself, by the series it sent within the idle
// timeout.
func TestSeriesTrackerForwardOnly(t *testing.T) {
	t.Setenv("FG_LIM_EU1", "tok-eu-1")
	t.Setenv("FG_LIM_US1", "tok-us-1")
	lim := fleet.DefaultLimits()
	reg, err := fleet.NewRegistry(fleet.Config{Limits: &lim, Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_EU1"}, Limits: &fleet.LimitOverrides{MaxSeries: intp(3)}},
		{Name: "us-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_US1"}},
	}})
	require.NoError(t, err)
	db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil) // no series hook
	require.NoError(t, err)
	defer db.Close()
	p, err := New(Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	tr, err := NewSeriesTracker(reg, nil)
	require.NoError(t, err)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr.now = func() time.Time { return clock }
	p.SetSeriesTracker(tr)
	eu, us := reg.Get("eu-1"), reg.Get("us-1")
	series := func(i int) labels.Labels { return labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)) }
	ts := int64(1000)
	write := func(c *fleet.Cluster, i int) error {
		ts++
		return appendOne(t, p, c, series(i), ts, 1)
	}
	for i := range 3 {
		require.NoError(t, write(eu, i))
	}
	err = write(eu, 3)
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err))
	require.Contains(t, err.Error(), `cluster "eu-1" is at its limit of 3 active series (limits.max_series)`)
	for i := range 3 {
		require.NoError(t, write(eu, i), "known series are accepted, cached or not")
	}
	for i := range 10 {
		require.NoError(t, write(us, i), "us-1 has no series limit")
	}
	n, ok := tr.ActiveSeries("eu-1")
	require.True(t, ok)
	require.EqualValues(t, 3, n)
	_, ok = tr.ActiveSeries("us-1")
	require.False(t, ok, "clusters without a limit are not tracked")

	// Series 0 stays active; 1 and 2 go idle and are forgotten after the idle timeout.
	clock = clock.Add(SeriesIdleTimeout / 2)
	require.NoError(t, write(eu, 0))
	clock = clock.Add(SeriesIdleTimeout/2 + 2*time.Minute)
	require.NoError(t, write(eu, 3))
	require.NoError(t, write(eu, 4))
	require.Error(t, write(eu, 5))
	n, _ = tr.ActiveSeries("eu-1")
	require.EqualValues(t, 3, n)
}

// Concurrent requests creating series pass the limit by at most one series
// each (the hook counts after creation); the count stays exact.
func TestSeriesLimitConcurrent(t *testing.T) {
	p, db, reg, sl := twoClusters(t, fleet.DefaultLimits(), &fleet.LimitOverrides{MaxSeries: intp(100)})
	eu := reg.Get("eu-1")
	const workers = 8
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 50 {
				_ = appendOne(t, p, eu, labels.FromStrings("__name__", "m", "w", fmt.Sprint(w), "i", fmt.Sprint(i)), 1000, 1)
			}
		}()
	}
	for range workers {
		<-done
	}
	n, _ := sl.ActiveSeries("eu-1")
	require.GreaterOrEqual(t, n, int64(100))
	require.LessOrEqual(t, n, int64(100+workers))
	require.EqualValues(t, n, db.Head().NumSeries(), "the count is the head's")
}
