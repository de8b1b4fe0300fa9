package metrics

import (
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/storage/remote"
	"github.com/stretchr/testify/require"
)

// TestAgentWALFailureLatchesAndReopens: forward-only mode's agent WAL gets
// the same latch and in-process reopen as the TSDB.
func TestAgentWALFailureLatchesAndReopens(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(1 << 40)
	logger := slog.New(slog.DiscardHandler)
	rs := remote.NewStorage(logger, nil, func() (int64, error) { return 0, nil }, filepath.Join(dir, "remote"), time.Second, nil, false)
	defer rs.Close()
	a, err := OpenAgent(dir, 0, rs, nil, logger,
		WithFreeSpace(func(string) (uint64, error) { return free.Load(), nil }, 10*time.Millisecond))
	require.NoError(t, err)
	running(t, a)
	defer a.Close()
	require.NotEmpty(t, a.g.inst.Load().failures, "the WAL write-failure counter is found")
	ts := time.Now().UnixMilli()
	require.NoError(t, batch(a, 1, 3000, ts))

	free.Store(0)
	fileSizeLimit(t, walSize(t, dir)+10_000)
	var ue *UnavailableError
	require.ErrorAs(t, batch(a, 2, 3000, ts+1000), &ue)
	liftFileSizeLimit(t)
	require.ErrorAs(t, batch(a, 3, 3000, ts+2000), &ue)
	require.Equal(t, "wal_failed", ue.Reason)
	require.ErrorContains(t, a.Ready(), "forward-only WAL failed")

	free.Store(1 << 40)
	require.Eventually(t, func() bool { return a.Ready() == nil }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, batch(a, 4, 3000, ts+3000))

	got := roundsAfterCrash(t, dir)
	require.Equal(t, 3000, got[1])
	require.Equal(t, 3000, got[4])
	require.Zero(t, got[3])
}
