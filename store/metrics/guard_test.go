package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/stretchr/testify/require"
)

// fileSizeLimit makes every write beyond n bytes of any regular file fail
// with EFBIG, as a full disk fails a write (a write crossing the limit is
// short). The Go runtime ignores SIGXFSZ. It is process-wide: tests using it
// must not run in parallel.
func fileSizeLimit(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old))
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: old.Max}))
	t.Cleanup(func() { liftFileSizeLimit(t) })
}

func liftFileSizeLimit(t *testing.T) {
	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old))
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: old.Max, Max: old.Max}))
}

// walSize is the size of the newest WAL segment.
func walSize(t *testing.T, dir string) uint64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "wal"))
	require.NoError(t, err)
	var last os.DirEntry
	for _, e := range ents {
		if e.Type().IsRegular() {
			last = e
		}
	}
	require.NotNil(t, last)
	fi, err := last.Info()
	require.NoError(t, err)
	return uint64(fi.Size())
}

// batch appends one sample to each of n series (one WAL record larger than
// a WAL page) at time ts and commits.
func batch(app storage.AppendableV2, round, n int, ts int64) error {
	a := app.AppenderV2(context.Background())
	for i := 0; i < n; i++ {
		ls := labels.FromStrings("__name__", "m", "series", fmt.Sprintf("s%05d", i), "padding", "abcdefghijklmnopqrstuvwxyz0123456789")
		if _, err := a.Append(0, ls, 0, ts, float64(round), nil, nil, storage.AOptions{}); err != nil {
			_ = a.Rollback()
			return err
		}
	}
	return a.Commit()
}

// rounds counts, per value ("round"), the samples stored in dir, read through
// a fresh TSDB opened on a copy of dir: what a process killed now would find.
func roundsAfterCrash(t *testing.T, dir string) map[float64]int {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, os.CopyFS(cp, os.DirFS(dir)))
	require.NoError(t, os.Remove(filepath.Join(cp, "lock")))
	db, err := tsdb.Open(cp, slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	defer db.Close()
	return rounds(t, db)
}

func rounds(t *testing.T, q storage.Queryable) map[float64]int {
	t.Helper()
	qr, err := q.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer qr.Close()
	out := map[float64]int{}
	ss := qr.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			_, v := it.At()
			out[v]++
		}
		require.NoError(t, it.Err())
	}
	require.NoError(t, ss.Err())
	return out
}

// TestUpstreamTornWALLosesLaterWrites shows the failure the guard exists
// for, on Prometheus's TSDB alone: a WAL write that fails in the middle of a
// multi-page record leaves a torn record; writes committed after space is
// back follow it, and the repair at the next open deletes them although
// their Commit succeeded. If this test fails, the upstream WAL no longer
// tears and the guard's latch could be revisited.
func TestUpstreamTornWALLosesLaterWrites(t *testing.T) {
	dir := t.TempDir()
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	defer db.Close()
	ts := time.Now().UnixMilli()
	require.NoError(t, batch(db, 1, 3000, ts))

	fileSizeLimit(t, walSize(t, dir)+10_000) // the next record fits one page and a bit
	require.Error(t, batch(db, 2, 3000, ts+1000), "the WAL write fails")
	liftFileSizeLimit(t)
	require.NoError(t, batch(db, 3, 3000, ts+2000), "space is back: the commit succeeds")
	require.Equal(t, 3000, rounds(t, db)[3], "and is queryable")

	got := roundsAfterCrash(t, dir)
	t.Logf("after a crash: %d of 3000 acknowledged before the failure, %d of 3000 acknowledged after it", got[1], got[3])
	require.Equal(t, 3000, got[1])
	require.Less(t, got[3], 3000, "acknowledged samples written after the torn record are lost at the next open")
}

func openTestStore(t *testing.T, dir string, free *atomic.Uint64, reg prometheus.Registerer) *Store {
	t.Helper()
	s, err := Open(Config{Path: dir}, reg, slog.New(slog.NewTextHandler(io.Discard, nil)),
		WithFreeSpace(func(string) (uint64, error) { return free.Load(), nil }, 10*time.Millisecond))
	require.NoError(t, err)
	running(t, s)
	return s
}

// running runs the actor of a store (its Run: the watcher that reopens it
// after a WAL failure) for the rest of the test, as main's run group does.
func running(t testing.TB, a interface{ Run(context.Context) error }) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// TestWALFailureLatchesAndReopens: after a failed WAL write nothing is
// acknowledged (503-style UnavailableError, /-/ready names it, the gauge is
// 1) until free space is back; then the store reopens in process and every
// acknowledged sample survives a crash.
func TestWALFailureLatchesAndReopens(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(1 << 40)
	reg := prometheus.NewRegistry()
	s := openTestStore(t, dir, &free, reg)
	defer s.Close()
	require.NotEmpty(t, s.g.inst.Load().failures, "the WAL write-failure counter is found")
	ts := time.Now().UnixMilli()
	require.NoError(t, batch(s, 1, 3000, ts))

	free.Store(0)
	// A writer that began before the failure and commits after it.
	early := s.AppenderV2(context.Background())
	_, err := early.Append(0, labels.FromStrings("__name__", "m", "series", "early"), 0, ts+500, 9, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	fileSizeLimit(t, walSize(t, dir)+10_000)
	err = batch(s, 2, 3000, ts+1000)
	var ue *UnavailableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "wal_failed", ue.Reason)
	require.Equal(t, 1.0, testutil.ToFloat64(s.g.failedGauge))
	require.True(t, s.g.inst.Load().walFailed(), "the WAL's own failure counter shows it")
	liftFileSizeLimit(t)
	require.ErrorAs(t, early.Commit(), &ue, "its WAL write follows the failed one: not acknowledged")

	// The disk works again but is still full: everything is refused at once.
	err = batch(s, 3, 3000, ts+2000)
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "wal_failed", ue.Reason)
	require.ErrorContains(t, s.Ready(), "WAL failed")
	require.Positive(t, ue.RetryAfter())
	// Reads keep working.
	require.Equal(t, 3000, rounds(t, s)[1])

	free.Store(1 << 40)
	require.Eventually(t, func() bool { return s.Ready() == nil }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, 0.0, testutil.ToFloat64(s.g.failedGauge))
	require.Equal(t, 1.0, testutil.ToFloat64(s.g.reopens))
	require.NoError(t, batch(s, 4, 3000, ts+3000))

	got := roundsAfterCrash(t, dir)
	require.Equal(t, 3000, got[1], "acknowledged before the failure")
	require.Equal(t, 3000, got[4], "acknowledged after the reopen")
	require.Zero(t, got[3], "refused")
	require.Zero(t, got[9], "refused")
}

// TestReopenInvalidatesSeriesRefs: a series reference handed out before a
// reopen is not used afterwards (the replay may give its number to another
// series): the append falls back to the labels.
func TestReopenInvalidatesSeriesRefs(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(1 << 40)
	s := openTestStore(t, dir, &free, nil)
	defer s.Close()
	a := s.AppenderV2(context.Background())
	ls := labels.FromStrings("__name__", "m", "a", "1")
	ref, err := a.Append(0, ls, 0, time.Now().UnixMilli(), 1, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	require.NoError(t, a.Commit())

	s.g.walFault(errors.New("injected"))
	require.Eventually(t, func() bool { return s.Ready() == nil }, 30*time.Second, 10*time.Millisecond)

	a = s.AppenderV2(context.Background())
	_, err = a.Append(ref, labels.EmptyLabels(), 0, time.Now().UnixMilli()+1, 2, nil, nil, storage.AOptions{})
	require.Error(t, err, "an old reference with no labels must not reach a series")
	ref2, err := a.Append(ref, ls, 0, time.Now().UnixMilli()+1, 2, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	require.NotEqual(t, ref, ref2)
	require.NoError(t, a.Commit())
}

// TestGateTurnsAwayUsersWhileReopening: while the store drains for a reopen,
// new queriers and appenders are refused at once (never blocked), and a
// querier held open delays the reopen instead of being pulled away.
func TestGateTurnsAwayUsersWhileReopening(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(0)
	s := openTestStore(t, dir, &free, nil)
	defer s.Close()
	require.NoError(t, batch(s, 1, 10, time.Now().UnixMilli()))
	q, err := s.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)

	s.g.walFault(errors.New("injected"))
	free.Store(1 << 40)
	require.Eventually(t, func() bool { return s.g.closing.Load() }, 10*time.Second, time.Millisecond)
	_, err = s.Querier(math.MinInt64, math.MaxInt64)
	var ue *UnavailableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "reopening", ue.Reason)
	require.ErrorAs(t, batch(s, 2, 10, time.Now().UnixMilli()), &ue)

	// The held querier still reads the old TSDB.
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	n := 0
	for ss.Next() {
		n++
	}
	require.Equal(t, 10, n)
	require.NoError(t, q.Close())
	require.Eventually(t, func() bool { return s.Ready() == nil }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, batch(s, 3, 10, time.Now().UnixMilli()+5))
}

// TestMinFreeBytesRefusesWrites: below the reserve, writes are refused
// before they reach the WAL, and accepted again when space is back.
func TestMinFreeBytesRefusesWrites(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	s, err := Open(Config{Path: t.TempDir(), MinFreeBytes: 100 << 20}, nil, slog.New(slog.DiscardHandler),
		WithFreeSpace(func(string) (uint64, error) { return free.Load(), nil }, 10*time.Millisecond))
	require.NoError(t, err)
	running(t, s)
	defer s.Close()
	require.NoError(t, batch(s, 1, 10, time.Now().UnixMilli()))
	free.Store(10 << 20)
	require.Eventually(t, func() bool { return s.Ready() != nil }, 10*time.Second, 10*time.Millisecond)
	var ue *UnavailableError
	require.ErrorAs(t, batch(s, 2, 10, time.Now().UnixMilli()+1), &ue)
	require.Equal(t, "low_disk", ue.Reason)
	require.Contains(t, ue.Error(), "storage.min_free_bytes")
	free.Store(1 << 30)
	require.Eventually(t, func() bool { return s.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, batch(s, 3, 10, time.Now().UnixMilli()+2))
}

// TestMinFreeBytesCheckedAtCommit: space that another writer takes between
// two ticks of the watcher is seen by the next commit, which is refused
// before its records reach the WAL (the e2e TestMinFreeBytesReserve failed
// once in CI when a burst filled the reserve within one tick).
func TestMinFreeBytesCheckedAtCommit(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	dir := t.TempDir()
	s, err := Open(Config{Path: dir, MinFreeBytes: 100 << 20}, nil, slog.New(slog.DiscardHandler),
		WithFreeSpace(func(string) (uint64, error) { return free.Load(), nil }, time.Hour))
	require.NoError(t, err)
	defer s.Close()
	ts := time.Now().UnixMilli()
	require.NoError(t, batch(s, 1, 10, ts))
	free.Store(10 << 20)
	// About time passing: a commit reads free space again only once its
	// last reading is spaceRecheck (1ms) old; the watcher ticks hourly here.
	time.Sleep(2 * spaceRecheck)
	var ue *UnavailableError
	require.ErrorAs(t, batch(s, 2, 10, ts+1), &ue)
	require.Equal(t, "low_disk", ue.Reason)
	free.Store(1 << 30)
	time.Sleep(2 * spaceRecheck) // as above
	require.NoError(t, batch(s, 3, 10, ts+2), "the next commit sees the space back, without waiting for the watcher")
	require.Equal(t, map[float64]int{1: 10, 3: 10}, rounds(t, s))
}

// TestFailedFinalFlushNotReplayed: a commit whose final page flush fails
// leaves its complete records in the WAL's page buffer, which closing the
// WAL writes out once there is space. The reopen cuts the WAL back to the
// last acknowledged write, so the refused samples are not replayed.
func TestFailedFinalFlushNotReplayed(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(1 << 40)
	s := openTestStore(t, dir, &free, nil)
	defer s.Close()
	ts := time.Now().UnixMilli()
	require.NoError(t, batch(s, 1, 20, ts))
	free.Store(0)
	fileSizeLimit(t, walSize(t, dir)+100) // the next record does not fit: its flush is short
	var ue *UnavailableError
	require.ErrorAs(t, batch(s, 2, 20, ts+1000), &ue)
	liftFileSizeLimit(t)
	free.Store(1 << 40)
	require.Eventually(t, func() bool { return s.Ready() == nil }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, batch(s, 3, 20, ts+2000))
	got := rounds(t, s)
	require.Equal(t, map[float64]int{1: 20, 3: 20}, got)
	require.Equal(t, map[float64]int{1: 20, 3: 20}, roundsAfterCrash(t, dir), "the refused round is not in the WAL")
}

// TestCrashWhileLatchedCutsAtRestart: a commit whose float samples record
// reaches the WAL whole but whose (multi-page) histogram record fails is
// refused; fleetgate is killed before the WAL is reopened. The restart cuts
// the WAL back to the last acknowledged write (recorded when the failure was
// latched), as the in-process reopen would: the refused floats are not
// replayed.
func TestCrashWhileLatchedCutsAtRestart(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	s := openTestStore(t, dir, &free, nil)
	defer s.Close()
	ts := time.Now().UnixMilli()
	require.NoError(t, batch(s, 1, 20, ts))

	fileSizeLimit(t, walSize(t, dir)+2000) // room for the floats, not for the histogram
	a := s.AppenderV2(context.Background())
	for i := 0; i < 20; i++ {
		ls := labels.FromStrings("__name__", "m", "series", fmt.Sprintf("s%05d", i), "padding", "abcdefghijklmnopqrstuvwxyz0123456789")
		_, err := a.Append(0, ls, 0, ts+1000, 2, nil, nil, storage.AOptions{})
		require.NoError(t, err)
	}
	h := &histogram.Histogram{Count: 5000, Sum: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 5000}}, PositiveBuckets: make([]int64, 5000)}
	h.PositiveBuckets[0] = 1
	_, err := a.Append(0, labels.FromStrings("__name__", "h"), 0, ts+1000, 0, h, nil, storage.AOptions{})
	require.NoError(t, err)
	var ue *UnavailableError
	require.ErrorAs(t, a.Commit(), &ue)
	liftFileSizeLimit(t)

	// The process dies now: a copy of its files.
	crashed := filepath.Join(t.TempDir(), "crashed")
	require.NoError(t, os.CopyFS(crashed, os.DirFS(dir)))
	require.NoError(t, os.Remove(filepath.Join(crashed, "lock")))
	var free2 atomic.Uint64
	free2.Store(1 << 40)
	s2 := openTestStore(t, crashed, &free2, nil)
	defer s2.Close()
	require.NoError(t, s2.Ready())
	require.Equal(t, map[float64]int{1: 20}, rounds(t, s2), "the refused floats are not replayed")
	require.NoError(t, batch(s2, 3, 20, ts+2000))
	_, set, err := readCutMark(filepath.Join(crashed, cutMarkFile))
	require.NoError(t, err)
	require.False(t, set, "the marker is cleared once the WAL is good")
}

// countingLifecycle counts series like the per-cluster series limiter.
type countingLifecycle struct {
	n         atomic.Int64
	replaying atomic.Bool
}

func (c *countingLifecycle) PreCreation(labels.Labels) error { return nil }
func (c *countingLifecycle) PostCreation(labels.Labels)      { c.n.Add(1) }
func (c *countingLifecycle) PostDeletion(d map[chunks.HeadSeriesRef]labels.Labels) {
	c.n.Add(-int64(len(d)))
}
func (c *countingLifecycle) Replaying() { c.replaying.Store(true); c.n.Store(0) }
func (c *countingLifecycle) Enforce()   { c.replaying.Store(false) }

// TestReopenKeepsSeriesCounts: the reopen's WAL replay creates every series
// again; a counting lifecycle hook is reset first, so it does not count
// them twice.
func TestReopenKeepsSeriesCounts(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	lc := &countingLifecycle{}
	s, err := Open(Config{Path: t.TempDir()}, nil, slog.New(slog.DiscardHandler), WithSeriesLifecycle(lc),
		WithFreeSpace(func(string) (uint64, error) { return free.Load(), nil }, 10*time.Millisecond))
	require.NoError(t, err)
	running(t, s)
	defer s.Close()
	require.NoError(t, batch(s, 1, 50, time.Now().UnixMilli()))
	require.EqualValues(t, 50, lc.n.Load())
	s.g.walFault(errors.New("injected"))
	require.Eventually(t, func() bool { return s.Ready() == nil }, 30*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 50, lc.n.Load(), "counted once after the replay")
	require.False(t, lc.replaying.Load(), "enforcing again")
}

// TestCommitNotAcknowledgedWithoutWALMark: a commit whose end in the WAL
// cannot be read (the segment cannot be stat'ed) is answered with 503, not
// acknowledged: its end would not be noted, and a later WAL failure would
// cut the WAL back to before it. The next commit reads the mark again.
func TestCommitNotAcknowledgedWithoutWALMark(t *testing.T) {
	s, err := Open(Config{Path: t.TempDir()}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, batch(s, 1, 10, 1000))
	inst := s.g.inst.Load()
	inst.ackMu.Lock()
	acked := inst.acked
	require.NotNil(t, inst.segF)
	require.NoError(t, inst.segF.Close()) // its Stat now fails
	inst.ackMu.Unlock()

	err = batch(s, 2, 10, 2000)
	var ue *UnavailableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "wal_failed", ue.Reason)
	require.NoError(t, s.Ready(), "not latched: the WAL itself did not fail")
	inst.ackMu.Lock()
	require.Equal(t, acked, inst.acked, "the unacknowledged write's end is not noted")
	inst.ackMu.Unlock()

	require.NoError(t, batch(s, 3, 10, 3000))
	inst.ackMu.Lock()
	require.True(t, acked.less(inst.acked), "acknowledged again once the mark can be read")
	inst.ackMu.Unlock()
}

// TestRunLifecycle: Run is an actor of main's run group: it ends when its
// context is cancelled or at Close (which waits for it), a second Run at
// once is an error, and a Run after Close returns at once.
func TestRunLifecycle(t *testing.T) {
	s, err := Open(Config{Path: t.TempDir()}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.Eventually(t, func() bool {
		s.g.mu.Lock()
		defer s.g.mu.Unlock()
		return s.g.running
	}, 10*time.Second, time.Millisecond)
	require.ErrorContains(t, s.Run(ctx), "Run called twice")
	require.NoError(t, s.Close())
	select {
	case err := <-done:
		require.NoError(t, err, "Close ends Run")
	default:
		t.Fatal("Close returned before Run")
	}
	require.NoError(t, s.Run(context.Background()), "a Run after Close returns at once")

	a, err := Open(Config{Path: t.TempDir()}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer a.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- a.Run(ctx2) }()
	cancel2()
	require.NoError(t, <-done, "cancelling its context ends Run")
}
