package seglog

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// faultyFile writes half of a write and fails it (a full disk), or fails
// fsync, or fails the truncation that undoes a failed append.
type faultyFile struct {
	segFile
	failWrites, failSyncs int
	truncFail             bool
}

func (f *faultyFile) Write(b []byte) (int, error) {
	if f.failWrites > 0 {
		f.failWrites--
		n, _ := f.segFile.Write(b[:len(b)/2])
		return n, syscall.ENOSPC
	}
	return f.segFile.Write(b)
}

func (f *faultyFile) Sync() error {
	if f.failSyncs > 0 {
		f.failSyncs--
		return syscall.EIO
	}
	return f.segFile.Sync()
}

func (f *faultyFile) Truncate(size int64) error {
	if f.truncFail {
		return syscall.EIO
	}
	return f.segFile.Truncate(size)
}

func records(t *testing.T, l *Log) []string {
	t.Helper()
	var got []string
	require.NoError(t, l.Scan(-1<<63, 1<<63-1, func(_ Pos, _, _ int64, d []byte) error { got = append(got, string(d)); return nil }))
	return got
}

// TestFailedAppendLeavesLogAsBefore: a short write or a failed fsync is cut
// off again; the caller gets a retryable WriteError; later appends and a
// reopen see exactly the acknowledged records.
func TestFailedAppendLeavesLogAsBefore(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    faultyFile
	}{
		{"short write (ENOSPC)", faultyFile{failWrites: 1}},
		{"fsync fails", faultyFile{failSyncs: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Open(dir, Options{})
			require.NoError(t, err)
			require.NoError(t, l.Append(Record{Data: []byte("a")}))
			ff := tc.f
			ff.segFile = l.f
			l.f = &ff
			err = l.Append(Record{Data: []byte("lost-lost-lost")}, Record{Data: []byte("lost-2")})
			var we *WriteError
			require.ErrorAs(t, err, &we)
			require.False(t, we.Latched)
			require.Positive(t, we.RetryAfter())
			require.NoError(t, l.Err())
			pos, err := l.AppendPos(Record{Data: []byte("b")})
			require.NoError(t, err)
			got, ok, err := l.ReadAt(pos[0])
			require.NoError(t, err)
			require.True(t, ok, "positions match the file after the rewind")
			require.Equal(t, "b", string(got))
			require.Equal(t, []string{"a", "b"}, records(t, l))
			require.NoError(t, l.Close())
			l, err = Open(dir, Options{})
			require.NoError(t, err)
			defer l.Close()
			require.Equal(t, []string{"a", "b"}, records(t, l))
		})
	}
}

// TestFailedRewindLatches: when the failed append cannot be cut off, the
// log refuses appends until it is reopened (which cuts the torn tail).
func TestFailedRewindLatches(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append(Record{Data: []byte("a")}))
	l.f = &faultyFile{segFile: l.f, failWrites: 1, truncFail: true}
	var we *WriteError
	require.ErrorAs(t, l.Append(Record{Data: []byte("torn-torn-torn")}), &we)
	require.True(t, we.Latched)
	require.ErrorAs(t, l.Append(Record{Data: []byte("b")}), &we, "refused although the disk works again")
	require.True(t, we.Latched)
	require.Error(t, l.Err())
	require.NoError(t, l.Close())

	l, err = Open(dir, Options{})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.Err())
	require.NoError(t, l.Append(Record{Data: []byte("c")}))
	require.Equal(t, []string{"a", "c"}, records(t, l))
}

// TestOversizedRecordFailsAlone: a record over MaxRecordBytes is refused on
// its own; appends committed in the same group go through.
func TestOversizedRecordFailsAlone(t *testing.T) {
	l, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer l.Close()
	big := make([]byte, MaxRecordBytes+1)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 7 {
				errs[i] = l.Append(Record{Data: []byte("small")}, Record{Data: big})
				return
			}
			errs[i] = l.Append(Record{Data: []byte(fmt.Sprint(i))})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			var tl *RecordTooLargeError
			require.True(t, errors.As(err, &tl), "%v", err)
			require.Contains(t, err.Error(), "67108864-byte limit")
			continue
		}
		require.NoError(t, err)
	}
	require.Len(t, records(t, l), 19, "the oversized append stored nothing, the others everything")
}

var _ segFile = (*os.File)(nil)
