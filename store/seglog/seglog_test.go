package seglog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAppendScanReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentBytes: 200})
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, l.Append(Record{MinT: int64(i), MaxT: int64(i), Data: []byte(fmt.Sprintf("rec-%02d", i))}))
	}
	var got []string
	require.NoError(t, l.Scan(5, 9, func(_ Pos, _, _ int64, d []byte) error { got = append(got, string(d)); return nil }))
	require.Equal(t, []string{"rec-05", "rec-06", "rec-07", "rec-08", "rec-09"}, got)
	require.NoError(t, l.Close())

	// A torn tail is cut on reopen; earlier records survive.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := segs[len(segs)-1]
	for i := len(segs) - 1; i >= 0; i-- {
		if st, _ := os.Stat(segs[i]); st.Size() > 0 {
			last = segs[i]
			break
		}
	}
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, _ = f.Write([]byte{1, 2, 3, 4, 5})
	f.Close()
	l, err = Open(dir, Options{SegmentBytes: 200})
	require.NoError(t, err)
	got = nil
	require.NoError(t, l.Scan(-1, 100, func(_ Pos, _, _ int64, d []byte) error { got = append(got, string(d)); return nil }))
	require.Len(t, got, 20)
	require.NoError(t, l.Close())
}

func TestSizeLimit(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentBytes: 100, MaxBytes: 400})
	require.NoError(t, err)
	defer l.Close()
	for i := range 100 {
		require.NoError(t, l.Append(Record{MinT: int64(i), MaxT: int64(i), Data: make([]byte, 30)}))
	}
	require.LessOrEqual(t, l.Size(), int64(400+100))
	n := 0
	require.NoError(t, l.Scan(-1, 1000, func(Pos, int64, int64, []byte) error { n++; return nil }))
	require.Less(t, n, 100)
	require.Greater(t, n, 0)
}

func TestAgeLimit(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentBytes: 10, MaxAge: time.Minute})
	require.NoError(t, err)
	defer l.Close()
	for i := range 5 {
		require.NoError(t, l.Append(Record{Data: []byte{byte(i)}}))
	}
	l.Enforce(time.Now().Add(time.Hour))
	n := 0
	require.NoError(t, l.Scan(-1, 1, func(Pos, int64, int64, []byte) error { n++; return nil }))
	require.LessOrEqual(t, n, 1)
}

func TestQueueResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := OpenQueue(dir, Options{SegmentBytes: 64})
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, q.Append(Record{Data: []byte(fmt.Sprintf("m%d", i))}))
	}
	ctx := context.Background()
	for i := range 4 {
		d, pos, err := q.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("m%d", i), string(d))
		require.NoError(t, q.Ack(pos))
	}
	// Read one more but do not ack it: it must be delivered again.
	_, _, err = q.Next(ctx)
	require.NoError(t, err)
	require.NoError(t, q.Close())

	q, err = OpenQueue(dir, Options{SegmentBytes: 64})
	require.NoError(t, err)
	defer q.Close()
	for i := 4; i < 10; i++ {
		d, pos, err := q.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("m%d", i), string(d))
		require.NoError(t, q.Ack(pos))
	}
	require.Zero(t, q.Pending())
	// Next blocks until an append arrives.
	done := make(chan string)
	go func() {
		d, _, _ := q.Next(ctx)
		done <- string(d)
	}()
	// About time passing: with nothing to read, Next does not return.
	select {
	case d := <-done:
		t.Fatalf("Next returned %q before anything was appended", d)
	case <-time.After(20 * time.Millisecond):
	}
	require.NoError(t, q.Append(Record{Data: []byte("late")}))
	require.Equal(t, "late", <-done)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, pos, _ := q.Next(ctx)
	require.NoError(t, q.Ack(pos))
	_, _, err = q.Next(cctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestReopenDoesNotPileUpEmptySegments(t *testing.T) {
	dir := t.TempDir()
	for range 5 {
		l, err := Open(dir, Options{})
		require.NoError(t, err)
		require.NoError(t, l.Close())
	}
	l, err := Open(dir, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append(Record{Data: []byte("a")}))
	require.NoError(t, l.Close())
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	require.Len(t, segs, 1)
	l, err = Open(dir, Options{})
	require.NoError(t, err)
	defer l.Close()
	n := 0
	require.NoError(t, l.Scan(-10, 10, func(Pos, int64, int64, []byte) error { n++; return nil }))
	require.Equal(t, 1, n)
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentBytes: 4096})
	require.NoError(t, err)
	defer l.Close()
	const workers, per = 16, 50
	type got struct {
		pos  []Pos
		data []string
	}
	results := make([]got, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				d := []string{fmt.Sprintf("w%d-%d-a", w, i), fmt.Sprintf("w%d-%d-b", w, i)}
				pos, err := l.AppendPos(Record{MinT: 1, MaxT: 1, Data: []byte(d[0])}, Record{MinT: 1, MaxT: 1, Data: []byte(d[1])})
				if err != nil {
					t.Error(err)
					return
				}
				results[w].pos = append(results[w].pos, pos...)
				results[w].data = append(results[w].data, d...)
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, r := range results {
		require.Len(t, r.pos, 2*per)
		for i, p := range r.pos {
			d, ok, err := l.ReadAt(p)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, r.data[i], string(d))
			n++
		}
	}
	count := 0
	require.NoError(t, l.Scan(0, 2, func(Pos, int64, int64, []byte) error { count++; return nil }))
	require.Equal(t, n, count)
}
