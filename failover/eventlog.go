package failover

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/fleetgate/fleetgate/internal/durable"
)

// logFile is what the event log needs of its file (tests inject failures).
type logFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Seek(offset int64, whence int) (int64, error)
	Close() error
}

// EventLog is the durable decision log: one JSON event per line, fsynced
// before a decision takes effect. A failed or short write is cut off again
// at once (the file is truncated back to the last good line), so a torn
// line is never followed by good ones; if that truncation fails too, the
// log refuses every append until it is reopened (a restart). A torn last
// line (a crash mid-write) is cut off on open.
type EventLog struct {
	mu     sync.Mutex
	path   string
	f      logFile
	off    int64 // size of the file up to the last good line
	failed error // non-nil: the file may end in a torn line; appends are refused
	// renamed: a compaction renamed a new file into place but the directory
	// fsync failed: the next append fsyncs the directory first, so that no
	// event written to the new file is acknowledged while a crash could bring
	// the old file back.
	renamed bool
	syncDir func(dir string) error // durable.SyncDir; tests inject failures
	events  []Event
	keep    int
	lines   int
	nextID  uint64
}

// errCompaction marks an Append whose events are durable but whose
// compaction of the file failed (the old file is still complete).
var errCompaction = errors.New("compacting the failover event log")

// OpenEventLog opens (or creates) the log at path, keeping the last keep events.
func OpenEventLog(path string, keep int) (*EventLog, error) {
	if keep <= 0 {
		keep = 10000
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("failover event log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failover event log: %w", err)
	}
	l := &EventLog{path: path, keep: keep, nextID: 1, syncDir: durable.SyncDir}
	r := bufio.NewReader(f)
	var good int64
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // a line without newline is torn: dropped below
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("reading failover event log %s: %w", path, err), f.Close())
		}
		var ev Event
		if jerr := json.Unmarshal(bytes.TrimSpace(line), &ev); jerr != nil {
			break
		}
		good += int64(len(line))
		l.add(ev)
		l.lines++
	}
	if err := f.Truncate(good); err != nil {
		return nil, errors.Join(fmt.Errorf("truncating torn tail of %s: %w", path, err), f.Close())
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return nil, errors.Join(fmt.Errorf("failover event log: %w", err), f.Close())
	}
	l.f, l.off = f, good
	return l, nil
}

func (l *EventLog) add(ev Event) {
	l.events = append(l.events, ev)
	if len(l.events) > l.keep {
		l.events = append([]Event(nil), l.events[len(l.events)-l.keep:]...)
	}
	if ev.ID >= l.nextID {
		l.nextID = ev.ID + 1
	}
}

// NextID is the ID the next appended event gets (decisions assign their
// events' IDs before queueing their signals).
func (l *EventLog) NextID() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextID
}

// Append makes the events durable. Events with ID 0 get the next IDs; events
// with IDs (from NextID) must carry exactly those. On error nothing was
// appended, except when the error wraps errCompaction (the events are durable).
func (l *EventLog) Append(evs []Event) ([]Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed != nil {
		return nil, fmt.Errorf("the failover event log failed earlier and refuses writes until fleetgate restarts: %w", l.failed)
	}
	if l.renamed {
		if err := l.syncDir(filepath.Dir(l.path)); err != nil {
			return nil, fmt.Errorf("syncing the directory of the compacted failover event log: %w", err)
		}
		l.renamed = false
	}
	var buf bytes.Buffer
	out := make([]Event, len(evs))
	for i, ev := range evs {
		want := l.nextID + uint64(i)
		if ev.ID == 0 {
			ev.ID = want
		} else if ev.ID != want {
			return nil, fmt.Errorf("failover event log: event %d appended where %d is next", ev.ID, want)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encoding failover event: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
		out[i] = ev
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return nil, l.undo(fmt.Errorf("writing failover event log: %w", err))
	}
	if err := l.f.Sync(); err != nil {
		return nil, l.undo(fmt.Errorf("syncing failover event log: %w", err))
	}
	l.off += int64(buf.Len())
	for _, ev := range out {
		l.add(ev)
		l.lines++
	}
	if l.lines > 2*l.keep {
		if err := l.compact(); err != nil {
			return out, fmt.Errorf("%w: %w", errCompaction, err)
		}
	}
	return out, nil
}

// undo cuts a failed append off the file; when that fails too, the log is
// latched as failed (a torn line would make the next open drop everything
// after it).
func (l *EventLog) undo(cause error) error {
	terr := l.f.Truncate(l.off)
	if terr == nil {
		_, terr = l.f.Seek(l.off, io.SeekStart)
	}
	if terr == nil {
		terr = l.f.Sync()
	}
	if terr != nil {
		l.failed = fmt.Errorf("%w; cutting it off again failed too: %w", cause, terr)
		return l.failed
	}
	return cause
}

// Err is non-nil while the log refuses writes (for /-/ready).
func (l *EventLog) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// compact rewrites the file with the kept events only.
func (l *EventLog) compact() error {
	tmp := l.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("compacting failover event log: %w", err)
	}
	fail := func(err error) error {
		cerr := f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("compacting failover event log: %w", errors.Join(err, cerr))
	}
	cw := &countingWriter{w: f}
	w := bufio.NewWriter(cw)
	enc := json.NewEncoder(w)
	for _, ev := range l.events {
		if err := enc.Encode(ev); err != nil {
			return fail(err)
		}
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fail(err)
	}
	// The new file is in place (the old one holds every event too): write
	// on to it; until its directory entry is durable, appends are refused.
	_ = l.f.Close() // the old file: its appends were fsynced when they returned, a close error loses nothing
	l.f, l.lines, l.off = f, len(l.events), cw.n
	if err := l.syncDir(filepath.Dir(l.path)); err != nil {
		l.renamed = true
		return fmt.Errorf("compacting failover event log: %w", err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Events returns up to limit events with ID > after, optionally of one
// group, oldest first.
func (l *EventLog) Events(after uint64, group string, limit int) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []Event{}
	for _, ev := range l.events {
		if ev.ID <= after || (group != "" && ev.Group != group) {
			continue
		}
		out = append(out, ev)
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// Close closes the file.
func (l *EventLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
