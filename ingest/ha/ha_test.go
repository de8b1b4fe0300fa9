package ha

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

func testRegistry(t *testing.T, names ...string) *fleet.Registry {
	var cc []fleet.ClusterConfig
	for _, n := range names {
		cc = append(cc, fleet.ClusterConfig{Name: n, Credentials: fleet.Credentials{TLSNames: []string{n}}})
	}
	r, err := fleet.NewRegistry(fleet.Config{Clusters: cc})
	require.NoError(t, err)
	return r
}

// oneSample is a series of one sample too old to be buffered for backfill.
var oneSample = &pipeline.Series{Samples: []pipeline.Sample{{T: 0, V: 1}}}

func TestHATracker(t *testing.T) {
	reg := testRegistry(t, "eu-1", "us-1")
	eu, us := reg.Get("eu-1"), reg.Get("us-1")
	series := func(replica string, extra ...string) labels.Labels {
		return labels.FromStrings(append([]string{"__name__", "up", "cluster", "x", "replica", replica}, extra...)...)
	}
	type step struct {
		at      time.Duration
		c       *fleet.Cluster
		ls      labels.Labels
		keep    bool
		elected string // elected replica of the step's group afterwards
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"first replica wins, other dropped", Config{}, []step{
			{0, eu, series("a"), true, "a"},
			{time.Second, eu, series("b"), false, "a"},
			{20 * time.Second, eu, series("a"), true, "a"},
			{45 * time.Second, eu, series("b"), false, "a"},
		}},
		{"failover after the timeout, and no flapping back", Config{}, []step{
			{0, eu, series("a"), true, "a"},
			{10 * time.Second, eu, series("b"), false, "a"},
			{41 * time.Second, eu, series("b"), true, "b"},
			{42 * time.Second, eu, series("a"), false, "b"},
		}},
		{"clusters are separate groups", Config{}, []step{
			{0, eu, series("a"), true, "a"},
			{time.Second, us, series("b"), true, "b"},
		}},
		{"per series group with group_label", Config{GroupLabel: "pair"}, []step{
			{0, eu, series("a", "pair", "p1"), true, "a"},
			{time.Second, eu, series("b", "pair", "p2"), true, "b"},
			{2 * time.Second, eu, series("b", "pair", "p1"), false, "a"},
		}},
		{"series without replica label are kept", Config{}, []step{
			{0, eu, labels.FromStrings("__name__", "up"), true, ""},
		}},
		{"custom replica label and short timeout", Config{ReplicaLabels: []string{"__replica__"}, FailoverTimeout: model.Duration(5 * time.Second)}, []step{
			{0, eu, labels.FromStrings("__name__", "up", "__replica__", "p0"), true, "p0"},
			{6 * time.Second, eu, labels.FromStrings("__name__", "up", "__replica__", "p1"), true, "p1"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Enabled = true
			tr, err := New(tc.cfg, nil)
			require.NoError(t, err)
			t0 := time.Unix(1_700_000_000, 0)
			for i, s := range tc.steps {
				tr.now = func() time.Time { return t0.Add(s.at) }
				out, keep, _ := tr.Accept(s.c, s.ls, oneSample)
				require.Equal(t, s.keep, keep, "step %d", i)
				if keep && s.elected != "" {
					require.False(t, out.Has("replica") || out.Has("__replica__"), "replica label dropped: %s", out)
				}
				if s.elected != "" {
					found := false
					for _, g := range tr.Status() {
						if g.Cluster == s.c.Name && g.Group == s.ls.Get(tc.cfg.GroupLabel) {
							require.Equal(t, s.elected, g.Elected, "step %d", i)
							found = true
						}
					}
					require.True(t, found)
				}
			}
		})
	}
}

func TestHAPinAndState(t *testing.T) {
	reg := testRegistry(t, "eu-1")
	eu := reg.Get("eu-1")
	tr, err := New(Config{Enabled: true}, nil)
	require.NoError(t, err)
	t0 := time.Unix(1_700_000_000, 0)
	tr.now = func() time.Time { return t0 }
	a := labels.FromStrings("__name__", "up", "replica", "a")
	b := labels.FromStrings("__name__", "up", "replica", "b")
	_, keep, _ := tr.Accept(eu, a, oneSample)
	require.True(t, keep)
	require.NoError(t, tr.Pin("eu-1", "", "b"))
	_, keep, _ = tr.Accept(eu, a, oneSample)
	require.False(t, keep)
	// Pinned: no failover even after a long silence.
	tr.now = func() time.Time { return t0.Add(time.Hour) }
	_, keep, _ = tr.Accept(eu, a, oneSample)
	require.False(t, keep)
	_, keep, _ = tr.Accept(eu, b, oneSample)
	require.True(t, keep)
	require.NoError(t, tr.Pin("eu-1", "", ""))
	st := tr.Status()
	require.Len(t, st, 1)
	require.False(t, st[0].Pinned)
	reasons := []string{}
	for _, e := range st[0].History {
		reasons = append(reasons, e.Reason)
	}
	require.Equal(t, []string{"first", "pin", "unpin"}, reasons)
	require.Error(t, tr.Pin("eu-1", "g", "a"), "group without group_label")

	// State survives a restart.
	path := filepath.Join(t.TempDir(), "json")
	require.NoError(t, tr.Save(path))
	tr2, err := New(Config{Enabled: true}, nil)
	require.NoError(t, err)
	require.NoError(t, tr2.Load(path))
	require.Equal(t, "b", tr2.Status()[0].Elected)
}

func TestHAConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ReplicaLabels: []string{""}}, "replica_labels"},
		{Config{ReplicaLabels: []string{"cluster"}}, "replica_labels"},
		{Config{FailoverTimeout: -1}, "failover_timeout"},
		{Config{HistorySize: -1}, "history_size"},
	} {
		require.ErrorContains(t, tc.cfg.Validate(), tc.want)
	}
}

// TestHAThroughPipeline: the tracker works per series inside one request.
func TestHAThroughPipeline(t *testing.T) {
	reg := testRegistry(t, "eu-1")
	db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	p, err := pipeline.New(pipeline.Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	tr, err := New(Config{Enabled: true}, nil)
	require.NoError(t, err)
	p.SetHATracker(tr)

	now := time.Now().UnixMilli()
	b := p.Begin(context.Background(), reg.Get("eu-1"))
	for _, s := range []struct{ name, replica string }{{"up", "a"}, {"up", "b"}, {"other", "b"}, {"other", "a"}, {"plain", ""}} {
		ls := labels.FromStrings("__name__", s.name, "replica", s.replica)
		require.NoError(t, b.Add(&pipeline.Series{Labels: ls, Samples: []pipeline.Sample{{T: now, V: 1}}}))
	}
	w, err := b.Commit()
	require.NoError(t, err)
	require.Equal(t, 3, w.Series, "up and other from replica a, plain")

	q, err := db.Querier(0, now+1)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	var got []string
	for ss.Next() {
		got = append(got, ss.At().Labels().String())
	}
	require.NoError(t, ss.Err())
	require.Equal(t, []string{`{__name__="other", cluster="eu-1"}`, `{__name__="plain", cluster="eu-1"}`, `{__name__="up", cluster="eu-1"}`}, got)
}

func BenchmarkHATrackerAccept(b *testing.B) {
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: []fleet.ClusterConfig{{Name: "eu-1", Credentials: fleet.Credentials{TLSNames: []string{"x"}}}}})
	require.NoError(b, err)
	c := reg.Get("eu-1")
	tr, err := New(Config{Enabled: true}, nil)
	require.NoError(b, err)
	a := labels.FromStrings("__name__", "http_requests_total", "cluster", "eu-1", "instance", "10.0.0.1:8080", "job", "api", "replica", "a")
	bb := labels.FromStrings("__name__", "http_requests_total", "cluster", "eu-1", "instance", "10.0.0.1:8080", "job", "api", "replica", "b")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if i%2 == 0 {
				tr.Accept(c, a, oneSample)
			} else {
				tr.Accept(c, bb, oneSample)
			}
			i++
		}
	})
}

// BenchmarkHATrackerAcceptBuffering: as above with recent samples, which
// the standby's calls keep in the backfill buffer.
func BenchmarkHATrackerAcceptBuffering(b *testing.B) {
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: []fleet.ClusterConfig{{Name: "eu-1", Credentials: fleet.Credentials{TLSNames: []string{"x"}}}}})
	require.NoError(b, err)
	c := reg.Get("eu-1")
	tr, err := New(Config{Enabled: true}, nil)
	require.NoError(b, err)
	a := labels.FromStrings("__name__", "http_requests_total", "cluster", "eu-1", "instance", "10.0.0.1:8080", "job", "api", "replica", "a")
	bb := labels.FromStrings("__name__", "http_requests_total", "cluster", "eu-1", "instance", "10.0.0.1:8080", "job", "api", "replica", "b")
	s := &pipeline.Series{Samples: []pipeline.Sample{{T: time.Now().UnixMilli(), V: 1}}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if i%2 == 0 {
				tr.Accept(c, a, s)
			} else {
				tr.Accept(c, bb, s)
			}
			i++
		}
	})
}

// The series cache must not let a replica's series skip the election: once
// replica b took over, replica a's (previously cached) series are dropped.
func TestHAElectionAppliesToCachedSeries(t *testing.T) {
	reg := testRegistry(t, "eu-1")
	db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	p, err := pipeline.New(pipeline.Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Positive(t, pipeline.DefaultConfig().SeriesCacheBytes, "the series cache is on by default")
	tr, err := New(Config{Enabled: true, FailoverTimeout: model.Duration(time.Second)}, nil)
	require.NoError(t, err)
	clock := time.Now()
	tr.now = func() time.Time { return clock }
	p.SetHATracker(tr)

	write := func(replica string, ts int64) int {
		b := p.Begin(context.Background(), reg.Get("eu-1"))
		require.NoError(t, b.Add(&pipeline.Series{Labels: labels.FromStrings("__name__", "up", "replica", replica), Samples: []pipeline.Sample{{T: ts, V: 1}}}))
		w, err := b.Commit()
		require.NoError(t, err)
		return w.Samples
	}
	base := time.Now().UnixMilli()
	require.Equal(t, 1, write("a", base))      // a elected
	require.Equal(t, 1, write("a", base+1000)) // a again (cache would hit)
	require.Equal(t, 0, write("b", base+1000)) // b is the standby
	clock = clock.Add(5 * time.Second)         // a goes silent
	require.Equal(t, 1, write("b", base+6000)) // b takes over
	require.Equal(t, 0, write("a", base+7000), "a is no longer elected, cached or not")
}

func intp(n int) *int { return &n }

// haStep is one push of a replica at second sec (the tracker's clock
// follows the sample times).
type haStep struct {
	replica string
	sec     int64
	series  []string // metric names, default just "up"
}

// TestHABackfill: the standby's buffered samples fill the failover gap,
// only those newer than the old replica's last sample of the same series.
func TestHABackfill(t *testing.T) {
	reg := testRegistry(t, "eu-1")
	eu := reg.Get("eu-1")
	base := time.Now().Truncate(time.Second)
	run := func(t *testing.T, cfg Config, steps []haStep) (map[string][]int64, *Tracker) {
		cfg.Enabled, cfg.FailoverTimeout = true, model.Duration(5*time.Second)
		tr, err := New(cfg, nil)
		require.NoError(t, err)
		var clock time.Time
		tr.now = func() time.Time { return clock }
		got := map[string][]int64{} // backfilled sample seconds by metric name
		for _, s := range steps {
			clock = base.Add(time.Duration(s.sec) * time.Second)
			names := s.series
			if names == nil {
				names = []string{"up"}
			}
			for _, n := range names {
				ls := labels.FromStrings("__name__", n, "cluster", "eu-1", "replica", s.replica)
				_, _, bf := tr.Accept(eu, ls, &pipeline.Series{Samples: []pipeline.Sample{{T: clock.UnixMilli(), V: 1}}})
				for _, b := range bf {
					require.Empty(t, b.Labels.Get("replica"))
					name := b.Labels.Get("__name__")
					got[name] = append(got[name], (b.Sample.T-base.UnixMilli())/1000)
				}
			}
		}
		return got, tr
	}
	// a pushes 0..3 s then dies; b pushes 0..9 s and takes over at 9 s.
	var steps []haStep
	for s := int64(0); s <= 9; s++ {
		if s <= 3 {
			steps = append(steps, haStep{replica: "a", sec: s, series: []string{"up", "late"}})
		}
		steps = append(steps, haStep{replica: "b", sec: s, series: []string{"up", "late"}})
	}
	// "late" of a stopped at 1 s: its gap starts earlier.
	steps2 := append([]haStep(nil), steps...)
	for i, s := range steps2 {
		if s.replica == "a" && s.sec > 1 {
			steps2[i].series = []string{"up"}
		}
	}

	t.Run("fills the gap after the old replica's last sample", func(t *testing.T) {
		got, tr := run(t, Config{}, steps2)
		require.Equal(t, []int64{4, 5, 6, 7, 8}, got["up"])
		require.Equal(t, []int64{2, 3, 4, 5, 6, 7, 8}, got["late"], "per series, not per group")
		require.Equal(t, "b", tr.Status()[0].Elected)
		require.Zero(t, testutil.ToFloat64(tr.bfSize), "the buffer is emptied on takeover")
	})
	t.Run("the bound holds, keeping the newest", func(t *testing.T) {
		got, tr := run(t, Config{BackfillMaxSamples: intp(3)}, steps)
		require.Equal(t, []int64{7, 8}, got["late"])
		require.Equal(t, []int64{8}, got["up"])
		require.Equal(t, float64(2*9-3), testutil.ToFloat64(tr.bfEvicted.WithLabelValues("eu-1")))
	})
	t.Run("disabled with 0", func(t *testing.T) {
		got, tr := run(t, Config{BackfillMaxSamples: intp(0)}, steps)
		require.Empty(t, got)
		require.Equal(t, "b", tr.Status()[0].Elected)
	})
	t.Run("nothing older than the window", func(t *testing.T) {
		// b was silent for a long time: only its recent samples are buffered.
		var st []haStep
		st = append(st, haStep{replica: "a", sec: 0}, haStep{replica: "b", sec: 0})
		st = append(st, haStep{replica: "a", sec: 30}, haStep{replica: "b", sec: 30})
		for s := int64(31); s <= 45; s++ {
			st = append(st, haStep{replica: "b", sec: s})
		}
		got, _ := run(t, Config{}, st)
		require.Equal(t, []int64{31, 32, 33, 34, 35}, got["up"])
	})
	require.Error(t, (&Config{BackfillMaxSamples: intp(-1)}).Validate())
}

// Through the pipeline: the backfill is appended with the request that
// triggers the takeover, and leaves no gap in the stored series.
func TestHABackfillPipeline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    *int
		maxGap int64
	}{{"on", nil, 1000}, {"off", intp(0), 6000}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := testRegistry(t, "eu-1")
			db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			p, err := pipeline.New(pipeline.Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			tr, err := New(Config{Enabled: true, FailoverTimeout: model.Duration(5 * time.Second), BackfillMaxSamples: tc.max}, nil)
			require.NoError(t, err)
			start := time.Now().Truncate(time.Second)
			var clock time.Time
			tr.now = func() time.Time { return clock }
			p.SetHATracker(tr)
			write := func(replica string, sec int64) int {
				clock = start.Add(time.Duration(sec) * time.Second)
				b := p.Begin(context.Background(), reg.Get("eu-1"))
				require.NoError(t, b.Add(&pipeline.Series{Labels: labels.FromStrings("__name__", "up", "replica", replica), Samples: []pipeline.Sample{{T: clock.UnixMilli(), V: float64(sec)}}}))
				w, err := b.Commit()
				require.NoError(t, err)
				return w.Samples
			}
			for s := int64(0); s <= 9; s++ {
				if s <= 3 {
					require.Equal(t, 1, write("a", s))
				}
				n := write("b", s)
				if s < 9 {
					require.Zero(t, n)
				} else if tc.max == nil {
					require.Equal(t, 6, n, "5 backfilled and its own")
				} else {
					require.Equal(t, 1, n)
				}
			}
			q, err := db.Querier(0, clock.UnixMilli()+1)
			require.NoError(t, err)
			defer q.Close()
			ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
			require.True(t, ss.Next())
			it := ss.At().Iterator(nil)
			var prev, gap int64
			n := 0
			for it.Next() != chunkenc.ValNone {
				ts, _ := it.At()
				if n > 0 {
					gap = max(gap, ts-prev)
				}
				prev = ts
				n++
			}
			require.False(t, ss.Next(), "one series across the failover")
			require.Equal(t, tc.maxGap, gap)
			if tc.max == nil {
				require.Equal(t, 5.0, testutil.ToFloat64(tr.backfilled.WithLabelValues("eu-1")))
			}
		})
	}
}

// Concurrent pushes across a failover (run with -race): the buffer and the
// takeover do not race, and the gauge ends where the buffer is.
func TestHABackfillConcurrent(t *testing.T) {
	reg := testRegistry(t, "eu-1")
	eu := reg.Get("eu-1")
	tr, err := New(Config{Enabled: true, FailoverTimeout: model.Duration(200 * time.Millisecond), BackfillMaxSamples: intp(100)}, nil)
	require.NoError(t, err)
	push := func(replica string, d time.Duration, done chan<- int) {
		total := 0
		for end := time.Now().Add(d); time.Now().Before(end); {
			for i := range 4 {
				ls := labels.FromStrings("__name__", fmt.Sprint("m", i), "cluster", "eu-1", "replica", replica)
				_, _, bf := tr.Accept(eu, ls, &pipeline.Series{Samples: []pipeline.Sample{{T: time.Now().UnixMilli(), V: 1}}})
				total += len(bf)
			}
		}
		done <- total
	}
	// (a failover timeout above haRefresh, or the elected one's last-seen
	// time is not refreshed often enough and the replicas flap)
	_, keep, _ := tr.Accept(eu, labels.FromStrings("__name__", "m0", "cluster", "eu-1", "replica", "a"), oneSample)
	require.True(t, keep)
	done := make(chan int, 4)
	go push("a", 300*time.Millisecond, done)
	go push("a", 300*time.Millisecond, done)
	go push("b", 700*time.Millisecond, done)
	go push("b", 700*time.Millisecond, done)
	total := 0
	for range 4 {
		total += <-done
	}
	st := tr.Status()[0]
	require.Equal(t, "b", st.Elected)
	failovers := 0
	for _, e := range st.History {
		if e.Reason == "failover" {
			failovers++
		}
	}
	require.Positive(t, failovers)
	require.Positive(t, total)
	require.LessOrEqual(t, total, 100*failovers, "at most backfill_max_samples per takeover")
	g := tr.groups[haKey{cluster: "eu-1"}]
	g.bf.mu.Lock()
	defer g.bf.mu.Unlock()
	require.Equal(t, float64(g.bf.count), testutil.ToFloat64(tr.bfSize))
}

// TestHAPinsSurviveACrash: a pin is written durably when it changes and
// restored at start even without a clean shutdown (no Save); a pin that
// cannot be written does not take effect.
func TestHAPinsSurviveACrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pins.json")
	cfg := Config{Enabled: true, GroupLabel: "ha_group"}
	tr, err := New(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, tr.OpenPins(path))
	require.NoError(t, tr.Pin("eu-1", "", "b"))
	require.NoError(t, tr.Pin("eu-1", "g2", "x"))
	require.NoError(t, tr.Pin("us-1", "", "c"))
	require.NoError(t, tr.Pin("us-1", "", ""), "unpin")

	// "Crash": a new tracker from the files on disk, no Save.
	tr2, err := New(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, tr2.OpenPins(path))
	pinned := map[string]string{}
	for _, st := range tr2.Status() {
		if st.Pinned {
			pinned[st.Cluster+"/"+st.Group] = st.Elected
		}
	}
	require.Equal(t, map[string]string{"eu-1/": "b", "eu-1/g2": "x"}, pinned)

	// The pin file cannot be written (its directory is gone): 503-style
	// error, the pin does not take effect.
	tr3, err := New(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, tr3.OpenPins(filepath.Join(dir, "gone", "pins.json")))
	err = tr3.Pin("eu-1", "", "b")
	require.ErrorIs(t, err, ErrPinNotSaved)
	require.Empty(t, tr3.Status(), "nothing pinned")
}

// TestHAPinFileOverridesShutdownState: the state file written at shutdown
// may be older than the pin file; the pin file decides.
func TestHAPinFileOverridesShutdownState(t *testing.T) {
	dir := t.TempDir()
	tr, err := New(Config{Enabled: true}, nil)
	require.NoError(t, err)
	require.NoError(t, tr.OpenPins(filepath.Join(dir, "pins.json")))
	require.NoError(t, tr.Pin("eu-1", "", "b"))
	require.NoError(t, tr.Save(filepath.Join(dir, "state.json")))
	require.NoError(t, tr.Pin("eu-1", "", "")) // then a crash: the state file still says pinned

	tr2, err := New(Config{Enabled: true}, nil)
	require.NoError(t, err)
	require.NoError(t, tr2.Load(filepath.Join(dir, "state.json")))
	require.NoError(t, tr2.OpenPins(filepath.Join(dir, "pins.json")))
	st := tr2.Status()
	require.Len(t, st, 1)
	require.False(t, st[0].Pinned)
}
