package metrics

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
)

var quietLogger = slog.New(slog.DiscardHandler)

// appendRaw appends samples of series name at the given times straight to
// a TSDB, as the landed code let any sender do.
func appendRaw(t *testing.T, db storage.AppendableV2, name string, ts ...int64) {
	t.Helper()
	a := db.AppenderV2(context.Background())
	for i, tt := range ts {
		_, err := a.Append(0, labels.FromStrings("__name__", name, "cluster", "eu-1"), 0, tt, float64(i), nil, nil, storage.AOptions{})
		require.NoError(t, err)
	}
	require.NoError(t, a.Commit())
}

// samples counts the samples of every series name in [mint, maxt].
func samples(t *testing.T, q storage.Queryable, mint, maxt int64) map[string]int {
	t.Helper()
	qr, err := q.Querier(mint, maxt)
	require.NoError(t, err)
	defer qr.Close()
	out := map[string]int{}
	ss := qr.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			out[ss.At().Labels().Get("__name__")]++
		}
	}
	require.NoError(t, ss.Err())
	return out
}

func currentTimes(now time.Time, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = now.Add(-time.Hour + time.Duration(i)*time.Minute).UnixMilli()
	}
	return out
}

// TestPoisonedHead: a head poisoned through the real TSDB (one sample a year
// ahead and one at MaxInt64) is detected at open: writes get a retryable
// UnavailableError instead of "out of bounds", /-/ready names it, the gauge
// is 1, reads still work. drop-future moves the head aside and writes its
// current samples back as blocks; the store then takes current samples.
func TestPoisonedHead(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	db, err := tsdb.Open(dir, quietLogger, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	appendRaw(t, db, "current", currentTimes(now, 30)...)
	appendRaw(t, db, "future", now.Add(365*24*time.Hour).UnixMilli(), math.MaxInt64)
	require.NoError(t, db.Close())

	s, err := Open(Config{Path: dir, Retention: model.Duration(15 * 24 * time.Hour)}, nil, quietLogger)
	require.NoError(t, err)
	require.ErrorContains(t, s.Ready(), "drop-future")
	require.Equal(t, 1.0, testutil.ToFloat64(s.poisoned))
	a := s.AppenderV2(context.Background())
	_, err = a.Append(0, labels.FromStrings("__name__", "new"), 0, now.UnixMilli(), 1, nil, nil, storage.AOptions{})
	var ue *UnavailableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "poisoned", ue.Reason)
	require.NoError(t, a.Rollback())
	require.Equal(t, 30, samples(t, s, math.MinInt64, now.UnixMilli())["current"])
	require.NoError(t, s.Close())

	rep, err := DropFuture(dir, now.Add(10*time.Minute), 2*time.Hour, quietLogger)
	require.NoError(t, err)
	require.True(t, rep.MovedHead)
	require.Equal(t, 30, rep.KeptSamples)
	require.Equal(t, 2, rep.DroppedSamples)
	require.NotEmpty(t, rep.WrittenBlocks)
	require.DirExists(t, filepath.Join(rep.PoisonedDir, "head", "wal"), "the originals are kept")

	s, err = Open(Config{Path: dir, Retention: model.Duration(15 * 24 * time.Hour)}, nil, quietLogger)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Ready())
	require.Equal(t, map[string]int{"current": 30}, samples(t, s, math.MinInt64, math.MaxInt64))
	appendRaw(t, s, "new", now.UnixMilli())
	require.Equal(t, 1, samples(t, s, math.MinInt64, math.MaxInt64)["new"])
}

// writeBlock writes one block with the given samples of series name into dir.
func writeBlock(t *testing.T, dir, name string, ts ...int64) {
	t.Helper()
	w, err := tsdb.NewBlockWriter(quietLogger, dir, 2*time.Hour.Milliseconds())
	require.NoError(t, err)
	defer w.Close()
	appendRaw(t, w, name, ts...)
	_, err = w.Flush(context.Background())
	require.NoError(t, err)
}

// TestPoisonedBlockKeepsOldData: a block a year ahead would make retention
// (counted back from the newest block) delete every real block at open;
// the poisoned store keeps them, and drop-future moves only the future block.
func TestPoisonedBlockKeepsOldData(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	db, err := tsdb.Open(dir, quietLogger, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	appendRaw(t, db, "current", currentTimes(now, 30)...)
	require.NoError(t, db.Close())
	writeBlock(t, dir, "old", now.Add(-72*time.Hour).UnixMilli(), now.Add(-71*time.Hour).UnixMilli())
	writeBlock(t, dir, "future", now.Add(365*24*time.Hour).UnixMilli())

	cfg := Config{Path: dir, Retention: model.Duration(15 * 24 * time.Hour)}
	s, err := Open(cfg, nil, quietLogger)
	require.NoError(t, err)
	require.ErrorContains(t, s.Ready(), "out of bounds")
	metas, err := s.BlockMetas()
	require.NoError(t, err)
	require.Len(t, metas, 2, "retention is suspended: the old block is kept")
	require.Equal(t, 2, samples(t, s, math.MinInt64, math.MaxInt64)["old"])
	require.NoError(t, s.Close())

	rep, err := DropFuture(dir, now.Add(10*time.Minute), 2*time.Hour, quietLogger)
	require.NoError(t, err)
	require.Len(t, rep.MovedBlocks, 1)
	require.False(t, rep.MovedHead, "the head holds no future sample")
	require.Equal(t, 1, rep.DroppedSamples)

	s, err = Open(cfg, nil, quietLogger)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Ready())
	require.Equal(t, map[string]int{"old": 2, "current": 30}, samples(t, s, math.MinInt64, math.MaxInt64))
	appendRaw(t, s, "new", now.UnixMilli())
}

// TestDropFutureAfterMaxInt64CompactionLoop: with a sample at MaxInt64 the
// TSDB's head compaction runs for ever; drop-future repairs what it leaves.
func TestDropFutureAfterMaxInt64CompactionLoop(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	db, err := tsdb.Open(dir, quietLogger, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	// The last sample is a minute old: the block range the loop writes for
	// it always reaches past now.
	appendRaw(t, db, "current", append(currentTimes(now, 30), now.Add(-time.Minute).UnixMilli())...)
	appendRaw(t, db, "future", math.MaxInt64)
	done := make(chan error, 1)
	go func() { done <- db.Compact(context.Background()) }()
	require.Eventually(t, func() bool {
		metas, _ := blockMetas(dir)
		return len(metas) >= 1
	}, 20*time.Second, 10*time.Millisecond, "the loop writes blocks")
	require.NoError(t, db.Close()) // stops the loop
	t.Logf("the interrupted compaction returned: %v", <-done)

	rep, err := DropFuture(dir, now.Add(10*time.Minute), 2*time.Hour, quietLogger)
	require.NoError(t, err)
	t.Logf("moved %d blocks, head moved: %v, kept %d samples", len(rep.MovedBlocks), rep.MovedHead, rep.KeptSamples)

	s, err := Open(Config{Path: dir}, nil, quietLogger)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Ready())
	require.Equal(t, map[string]int{"current": 31}, samples(t, s, math.MinInt64, math.MaxInt64))
	appendRaw(t, s, "new", now.UnixMilli()) // not out of bounds: no block reaches past now
	entries, err := os.ReadDir(rep.PoisonedDir)
	require.NoError(t, err)
	require.NotEmpty(t, entries)
}
