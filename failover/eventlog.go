package failover

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// EventLog is the durable decision log: one JSON event per line, fsynced
// before the decision's signals are queued. A torn last line (a crash
// mid-write) is cut off on open.
type EventLog struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	events []Event
	keep   int
	lines  int
	nextID uint64
}

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
	l := &EventLog{path: path, f: f, keep: keep, nextID: 1}
	r := bufio.NewReader(f)
	var good int64
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // a line without newline is torn: dropped below
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading failover event log %s: %w", path, err)
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
		f.Close()
		return nil, fmt.Errorf("truncating torn tail of %s: %w", path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("failover event log: %w", err)
	}
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

// Append assigns IDs to the events and makes them durable.
func (l *EventLog) Append(evs []Event) ([]Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var buf bytes.Buffer
	out := make([]Event, len(evs))
	for i, ev := range evs {
		ev.ID = l.nextID + uint64(i)
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encoding failover event: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
		out[i] = ev
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("writing failover event log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return nil, fmt.Errorf("syncing failover event log: %w", err)
	}
	for _, ev := range out {
		l.add(ev)
		l.lines++
	}
	if l.lines > 2*l.keep {
		if err := l.compact(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// compact rewrites the file with the kept events only.
func (l *EventLog) compact() error {
	tmp := l.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("compacting failover event log: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, ev := range l.events {
		if err := enc.Encode(ev); err != nil {
			f.Close()
			return fmt.Errorf("compacting failover event log: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("compacting failover event log: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("compacting failover event log: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		f.Close()
		return fmt.Errorf("compacting failover event log: %w", err)
	}
	l.f.Close()
	l.f, l.lines = f, len(l.events)
	return nil
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
