package failover

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// faultyFile writes only half of a write and fails it (as a full disk
// does); truncFail also fails the truncation that undoes it.
type faultyFile struct {
	*os.File
	failWrites int
	truncFail  bool
}

func (f *faultyFile) Write(b []byte) (int, error) {
	if f.failWrites > 0 {
		f.failWrites--
		n, _ := f.File.Write(b[:len(b)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(b)
}

func (f *faultyFile) Truncate(size int64) error {
	if f.truncFail {
		return syscall.EIO
	}
	return f.File.Truncate(size)
}

// TestEventLogFailedWriteIsCutOff: a short write is truncated away at
// once, so the next event follows the last good line and a reopen keeps it.
func TestEventLogFailedWriteIsCutOff(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenEventLog(p, 0)
	require.NoError(t, err)
	_, err = l.Append([]Event{{Group: "g", Kind: KindDrain}})
	require.NoError(t, err)
	ff := &faultyFile{File: l.f.(*os.File), failWrites: 1}
	l.f = ff
	_, err = l.Append([]Event{{Group: "g", Kind: KindFailover, Reason: "lost"}})
	require.ErrorIs(t, err, syscall.ENOSPC)
	evs, err := l.Append([]Event{{Group: "g", Kind: KindRestore}})
	require.NoError(t, err)
	require.Equal(t, uint64(2), evs[0].ID, "the failed event used no ID")
	require.NoError(t, l.Close())

	l, err = OpenEventLog(p, 0)
	require.NoError(t, err)
	got := l.Events(0, "", 0)
	require.Len(t, got, 2, "the event after the failed one survives a reopen")
	require.Equal(t, KindRestore, got[1].Kind)
}

// TestEventLogLatchesWhenUndoFails: if the torn line cannot be cut off,
// the log refuses appends until it is reopened (which cuts it off).
func TestEventLogLatchesWhenUndoFails(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenEventLog(p, 0)
	require.NoError(t, err)
	_, err = l.Append([]Event{{Group: "g", Kind: KindDrain}})
	require.NoError(t, err)
	l.f = &faultyFile{File: l.f.(*os.File), failWrites: 1, truncFail: true}
	_, err = l.Append([]Event{{Group: "g", Kind: KindFailover}})
	require.Error(t, err)
	require.Error(t, l.Err())
	_, err = l.Append([]Event{{Group: "g", Kind: KindRestore}})
	require.ErrorContains(t, err, "refuses writes until fleetgate restarts")
	require.NoError(t, l.Close())

	l, err = OpenEventLog(p, 0)
	require.NoError(t, err)
	require.NoError(t, l.Err())
	require.Len(t, l.Events(0, "", 0), 1)
	_, err = l.Append([]Event{{Group: "g", Kind: KindRestore}})
	require.NoError(t, err)
}

type ctrlFixture struct {
	dir    string
	evlog  *EventLog
	outbox *Outbox
	sink   *recordingSink
	ctrl   *Controller
}

func newCtrlFixture(t *testing.T, dir string) *ctrlFixture {
	t.Helper()
	evlog, err := OpenEventLog(filepath.Join(dir, "events.jsonl"), 0)
	require.NoError(t, err)
	t.Cleanup(func() { evlog.Close() })
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), time.Millisecond, time.Millisecond, nil, discard)
	require.NoError(t, err)
	sink := &recordingSink{}
	ctrl, err := NewController(ControllerOptions{Engine: NewEngine(Config{Groups: []GroupConfig{apGroup()}}), Log: evlog, Outbox: ob,
		Sinks: []Sink{sink}, Logger: discard})
	require.NoError(t, err)
	return &ctrlFixture{dir: dir, evlog: evlog, outbox: ob, sink: sink, ctrl: ctrl}
}

func (f *ctrlFixture) queued(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(f.dir, "outbox", "rec"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestOperatorDecisionIsAtomic: a freeze whose signal cannot be queued, or
// whose event cannot be logged, fails (the API answers 503) and changes
// nothing: not frozen, no event, no queued signal. Once the disk works, it
// takes effect with its event and its signal.
func TestOperatorDecisionIsAtomic(t *testing.T) {
	f := newCtrlFixture(t, t.TempDir())

	f.outbox.write = func(string, []byte) error { return syscall.ENOSPC }
	_, err := f.ctrl.Freeze("web", "ops", "maintenance", time.Time{})
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Nil(t, f.ctrl.Status()[0].Frozen, "not frozen")
	require.Empty(t, f.ctrl.Events(0, "", 0))
	require.Empty(t, f.queued(t))
	f.outbox.write = writeFileSync

	f.evlog.f = &faultyFile{File: f.evlog.f.(*os.File), failWrites: 1}
	_, err = f.ctrl.Freeze("web", "ops", "maintenance", time.Time{})
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Nil(t, f.ctrl.Status()[0].Frozen, "not frozen")
	require.Empty(t, f.ctrl.Events(0, "", 0))
	require.Empty(t, f.queued(t), "the signal written before the log failed is removed")
	require.Zero(t, f.outbox.Pending("rec"))

	ev, err := f.ctrl.Freeze("web", "ops", "maintenance", time.Time{})
	require.NoError(t, err)
	require.Equal(t, uint64(1), ev.ID)
	require.NotNil(t, f.ctrl.Status()[0].Frozen)
	require.Len(t, f.ctrl.Events(0, "", 0), 1)
	require.Len(t, f.queued(t), 1)
	require.Equal(t, 1, f.outbox.Pending("rec"))
	var m Message
	b, err := os.ReadFile(filepath.Join(f.dir, "outbox", "rec", f.queued(t)[0]))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, ev.ID, m.EventID, "the signal carries the event's pre-assigned ID")
}

// TestAutomaticDecisionRetriedAfterFailure: a drain that cannot be recorded
// leaves the engine as it was and is decided again at the next evaluation.
func TestAutomaticDecisionRetriedAfterFailure(t *testing.T) {
	f := newCtrlFixture(t, t.TempDir())
	down := results(step{"eu-1": "D", "eu-2": "H", "us-1": "H"})
	f.ctrl.OnResults(context.Background(), t0, down)
	f.ctrl.OnResults(context.Background(), t0.Add(time.Second), down)
	f.outbox.write = func(string, []byte) error { return syscall.ENOSPC }
	f.ctrl.OnResults(context.Background(), t0.Add(2*time.Second), down)
	require.Empty(t, f.ctrl.Events(0, "", 0))
	require.Equal(t, []string{"eu-1"}, f.ctrl.Status()[0].Serving, "no failover without its event")
	require.Empty(t, f.queued(t))

	f.outbox.write = writeFileSync
	f.ctrl.OnResults(context.Background(), t0.Add(3*time.Second), down)
	evs := f.ctrl.Events(0, "", 0)
	require.Len(t, evs, 2)
	require.Equal(t, KindDrain, evs[0].Kind)
	require.Equal(t, KindFailover, evs[1].Kind)
	require.NotEqual(t, []string{"eu-1"}, f.ctrl.Status()[0].Serving)
	require.Len(t, f.queued(t), 2)
}

// TestOrphanSignalsDroppedAtStart: signals written for a decision whose
// event never reached the log (fleetgate stopped in between) are not
// delivered after a restart.
func TestOrphanSignalsDroppedAtStart(t *testing.T) {
	dir := t.TempDir()
	f := newCtrlFixture(t, dir)
	_, err := f.ctrl.Freeze("web", "ops", "kept", time.Time{})
	require.NoError(t, err)
	_, err = f.outbox.Prepare([]Message{{Sink: "rec", EventID: 2, Created: time.Now(), Payload: json.RawMessage(`{}`)}})
	require.NoError(t, err)
	require.NoError(t, f.outbox.Enqueue("rec", 0, time.Now(), json.RawMessage(`{"sync":true}`)))
	require.Len(t, f.queued(t), 3)
	require.NoError(t, f.evlog.Close())

	g := newCtrlFixture(t, dir)
	require.Len(t, g.queued(t), 2, "the event-1 signal and the state sync stay, the orphan goes")
	require.Equal(t, 2, g.outbox.Pending("rec"))
	require.NotNil(t, g.ctrl.Status()[0].Frozen, "the logged freeze is restored")
}

// FuzzEventLogOpen: whatever a crash or a full disk left in the file, the
// log opens, keeps a prefix of whole events, and an event appended then is
// there after the next open.
func FuzzEventLogOpen(f *testing.F) {
	f.Add([]byte(`{"id":1,"group":"g","kind":"drain"}` + "\n" + `{"id":2,"group":"g","ki`))
	f.Add([]byte("\x00\x00\x00"))
	f.Add([]byte(`{"id":5,"group":"g","kind":"freeze"}` + "\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "events.jsonl")
		require.NoError(t, os.WriteFile(p, b, 0o644))
		l, err := OpenEventLog(p, 0)
		require.NoError(t, err)
		before := l.Events(0, "", 0)
		evs, err := l.Append([]Event{{Group: "fuzz", Kind: KindFreeze}})
		require.NoError(t, err)
		require.NoError(t, l.Close())
		l, err = OpenEventLog(p, 0)
		require.NoError(t, err)
		defer l.Close()
		after := l.Events(0, "", 0)
		require.Len(t, after, len(before)+1)
		require.Equal(t, evs[0].ID, after[len(after)-1].ID)
	})
}

// TestEventLogCompactionDirSyncFailure: when the directory fsync after a
// compaction's rename fails, the append that compacted is still durable (the
// old file holds it too), but no later event is acknowledged until the
// directory entry of the new file is durable: a crash could bring the old
// file back and lose it.
func TestEventLogCompactionDirSyncFailure(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenEventLog(p, 1)
	require.NoError(t, err)
	_, err = l.Append([]Event{{Group: "g", Kind: KindDrain}, {Group: "g", Kind: KindWeights}})
	require.NoError(t, err)
	dirSyncFails := true
	l.syncDir = func(string) error {
		if dirSyncFails {
			return syscall.EIO
		}
		return nil
	}
	got, err := l.Append([]Event{{Group: "g", Kind: KindFailover}}) // 3 lines > 2*keep: compacts
	require.ErrorIs(t, err, errCompaction, "the event is logged, only the compaction failed")
	require.ErrorIs(t, err, syscall.EIO)
	require.Len(t, got, 1)

	_, err = l.Append([]Event{{Group: "g", Kind: KindRestore}})
	require.ErrorIs(t, err, syscall.EIO, "not acknowledged while the compacted file's directory entry is not durable")
	require.NotErrorIs(t, err, errCompaction)
	require.Equal(t, uint64(4), l.NextID(), "the refused event used no ID")

	dirSyncFails = false
	got, err = l.Append([]Event{{Group: "g", Kind: KindRestore}})
	require.NoError(t, err)
	require.Equal(t, uint64(4), got[0].ID)
	require.NoError(t, l.Close())

	l, err = OpenEventLog(p, 1)
	require.NoError(t, err)
	defer l.Close()
	evs := l.Events(0, "", 0)
	require.Equal(t, uint64(4), evs[len(evs)-1].ID)
	require.Equal(t, KindRestore, evs[len(evs)-1].Kind)
}
