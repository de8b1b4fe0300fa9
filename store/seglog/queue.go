package seglog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Queue is a durable FIFO over a Log: records stay on disk until the single
// consumer acknowledges them; the read cursor is persisted, so a restart
// resumes where the consumer left off. When the log is over its size or age
// limit the oldest segments are dropped even if unread (DroppedSegments
// counts them).
type Queue struct {
	log *Log

	mu       sync.Mutex
	cursor   Pos
	dropped  int
	cursorFn string
}

// OpenQueue opens the queue in dir.
func OpenQueue(dir string, opts Options) (*Queue, error) {
	l, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	q := &Queue{log: l, cursorFn: filepath.Join(dir, "cursor")}
	if b, err := os.ReadFile(q.cursorFn); err == nil && len(b) == 16 {
		q.cursor = Pos{binary.LittleEndian.Uint64(b), int64(binary.LittleEndian.Uint64(b[8:]))}
	}
	l.mu.Lock()
	l.deleted = func(seg uint64, _ int) {
		q.mu.Lock()
		if seg >= q.cursor.Seg {
			q.dropped++
		}
		q.mu.Unlock()
	}
	l.mu.Unlock()
	return q, nil
}

// Append adds records durably.
func (q *Queue) Append(recs ...Record) error { return q.log.Append(recs...) }

// Next blocks until a record after the cursor exists (or ctx ends) and
// returns it with the position to pass to Ack.
func (q *Queue) Next(ctx context.Context) ([]byte, Pos, error) {
	for {
		ch := q.log.changed()
		q.mu.Lock()
		cur := q.cursor
		q.mu.Unlock()
		data, _, after, ok, err := q.log.next(cur)
		if err != nil {
			return nil, Pos{}, err
		}
		if ok {
			return data, after, nil
		}
		select {
		case <-ctx.Done():
			return nil, Pos{}, ctx.Err()
		case <-ch:
		}
	}
}

// Ack moves the cursor to pos (as returned by Next): everything before it
// is delivered. The cursor is persisted (written, fsynced, renamed) and fully
// delivered segments are deleted. If persisting fails (a full disk), the
// cursor still moves on in memory and the error is returned: after a restart
// the records since the last persisted cursor are delivered again (at least
// once), and no segment is deleted until a cursor past it is persisted.
func (q *Queue) Ack(pos Pos) error {
	q.mu.Lock()
	q.cursor = pos
	q.mu.Unlock()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], pos.Seg)
	binary.LittleEndian.PutUint64(b[8:], uint64(pos.Off))
	tmp := q.cursorFn + ".tmp"
	if err := writeFileSync(tmp, b[:], !q.log.opts.NoSync); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("queue cursor: %w", err)
	}
	if err := os.Rename(tmp, q.cursorFn); err != nil {
		return fmt.Errorf("queue cursor: %w", err)
	}
	// Delete segments the consumer has passed (never the one being written).
	l := q.log
	l.mu.Lock()
	for len(l.segs) > 1 && l.segs[0].n < pos.Seg {
		s := l.segs[0]
		_ = os.Remove(s.path(l.dir))
		l.total -= s.size
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	return nil
}

// Pending is the number of bytes not yet acknowledged (approximate).
func (q *Queue) Pending() int64 {
	q.mu.Lock()
	cur := q.cursor
	q.mu.Unlock()
	var n int64
	for _, s := range q.log.snapshot() {
		switch {
		case s.n > cur.Seg:
			n += s.size
		case s.n == cur.Seg:
			n += max(0, s.size-cur.Off)
		}
	}
	return n
}

// DroppedSegments counts unread segments deleted by the size or age limit.
func (q *Queue) DroppedSegments() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Close closes the queue.
func (q *Queue) Close() error { return q.log.Close() }

func writeFileSync(name string, b []byte, sync bool) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return errors.Join(err, f.Close())
	}
	if sync {
		if err := f.Sync(); err != nil {
			return errors.Join(err, f.Close())
		}
	}
	return f.Close()
}
