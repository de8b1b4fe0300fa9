// Package seglog is a bounded, segmented, append-only record log on disk.
// Appends are fsynced before they return, so a caller may acknowledge data
// once Append succeeds. Old segments are deleted when the log grows over its
// size limit or a segment's newest record is older than the age limit.
//
// It backs the embedded log and trace stores (time-bounded scans) and the
// durable forward queues (a persisted read cursor, see Queue).
package seglog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/internal/durable"
)

// Options bound the log.
type Options struct {
	// MaxBytes bounds the total size of all segments (0: unbounded).
	MaxBytes int64
	// MaxAge deletes segments whose newest record is older (0: no age limit).
	MaxAge time.Duration
	// SegmentBytes is the size at which a new segment is started (default 16 MiB).
	SegmentBytes int64
	// NoSync skips fsync (tests and benchmarks of the callers only).
	NoSync bool
}

// headerSize: length, crc32c, minT, maxT.
const headerSize = 4 + 4 + 8 + 8

// MaxRecordBytes bounds one record.
const MaxRecordBytes = 64 << 20

// RecordTooLargeError refuses a record over MaxRecordBytes. Only the append
// carrying it fails; appends committed in the same group are not affected.
type RecordTooLargeError struct{ Size int }

func (e *RecordTooLargeError) Error() string {
	return fmt.Sprintf("seglog: a record of %d bytes is over the %d-byte limit", e.Size, MaxRecordBytes)
}

// WriteError is a failed append: nothing of it is in the log (the segment was
// cut back to where it was), so the caller may retry later (RetryAfter makes
// receivers answer 503 with Retry-After). Latched means the log could not be
// cut back and refuses every append until it is reopened.
type WriteError struct {
	Dir     string
	Err     error
	Latched bool
}

func (e *WriteError) Error() string {
	if e.Latched {
		return fmt.Sprintf("seglog %s: refusing appends until reopened (restart fleetgate): %v", e.Dir, e.Err)
	}
	return fmt.Sprintf("seglog %s: %v", e.Dir, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// RetryAfter is how long a sender should wait before retrying.
func (e *WriteError) RetryAfter() time.Duration { return 5 * time.Second }

// segFile is what the log needs of its active segment (tests inject failures).
type segFile interface {
	Write(b []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Seek(offset int64, whence int) (int64, error)
	Close() error
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Pos is the position of a record: segment number and byte offset.
type Pos struct {
	Seg uint64
	Off int64
}

// Less orders positions.
func (p Pos) Less(o Pos) bool { return p.Seg < o.Seg || (p.Seg == o.Seg && p.Off < o.Off) }

type segment struct {
	n          uint64
	size       int64 // bytes durable and readable
	minT, maxT int64 // record time bounds (ms); minT > maxT when empty
	modified   time.Time
}

func (s *segment) path(dir string) string { return filepath.Join(dir, fmt.Sprintf("%020d.seg", s.n)) }

// Log is safe for concurrent use.
type Log struct {
	dir  string
	opts Options

	mu      sync.RWMutex
	segs    []*segment // oldest first; the last one is open for writing
	f       segFile
	failed  error // a failed append could not be undone: appends are refused
	buf     []byte
	total   int64
	deleted func(seg uint64, records int) // called under mu when retention drops a segment
	notify  chan struct{}

	// Group commit: concurrent Appends are written with one fsync.
	gmu     sync.Mutex
	waiting []*pendingAppend
	leading bool
}

type pendingAppend struct {
	recs []Record
	pos  []Pos
	err  error
	done chan struct{} // closed when pos/err are set
	lead chan struct{} // signalled when this append becomes the leader
}

// Open opens or creates the log in dir, truncating a torn tail.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 16 << 20
	}
	if opts.MaxBytes > 0 && opts.SegmentBytes > opts.MaxBytes/2 {
		opts.SegmentBytes = max(opts.MaxBytes/2, 4096)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	l := &Log{dir: dir, opts: opts, notify: make(chan struct{})}
	next := uint64(1) // number of the segment this Open starts
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			continue
		}
		s := &segment{n: n}
		if err := l.recover(s); err != nil {
			return nil, err
		}
		if s.size == 0 {
			// An empty segment (each Open starts a fresh one) holds nothing.
			_ = os.Remove(s.path(dir))
			next = max(next, n+1)
			continue
		}
		l.segs = append(l.segs, s)
		l.total += s.size
	}
	sort.Slice(l.segs, func(i, j int) bool { return l.segs[i].n < l.segs[j].n })
	if len(l.segs) > 0 {
		next = max(next, l.segs[len(l.segs)-1].n+1)
	}
	// Always start a fresh segment: the old tail may have been truncated.
	if err := l.startSegment(next); err != nil {
		return nil, err
	}
	return l, nil
}

// recover scans the headers of a segment, truncating after the last valid record.
func (l *Log) recover(s *segment) (err error) {
	p := s.path(l.dir)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening segment: %w", err)
	}
	defer func() {
		// the segment may have been truncated: its close error counts
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing segment %s: %w", p, cerr)
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat segment: %w", err)
	}
	s.modified = st.ModTime()
	s.minT, s.maxT = 1<<62, -1<<62
	r := bufio.NewReaderSize(f, 1<<16)
	var off int64
	var hdr [headerSize]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		n := binary.LittleEndian.Uint32(hdr[0:])
		if n > MaxRecordBytes {
			break
		}
		if cap(payload) < int(n) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			break
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			break
		}
		minT, maxT := int64(binary.LittleEndian.Uint64(hdr[8:])), int64(binary.LittleEndian.Uint64(hdr[16:]))
		s.minT, s.maxT = min(s.minT, minT), max(s.maxT, maxT)
		off += headerSize + int64(n)
	}
	if off < st.Size() {
		if err := f.Truncate(off); err != nil {
			return fmt.Errorf("truncating torn segment %s: %w", p, err)
		}
	}
	s.size = off
	return nil
}

// startSegment creates segment n and makes it the active one; on error the
// active segment stays as it was.
func (l *Log) startSegment(n uint64) error {
	s := &segment{n: n, minT: 1 << 62, maxT: -1 << 62, modified: time.Now()}
	f, err := os.OpenFile(s.path(l.dir), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating segment: %w", err)
	}
	if !l.opts.NoSync {
		if err := durable.SyncDir(l.dir); err != nil {
			cerr := f.Close()
			_ = os.Remove(s.path(l.dir))
			return fmt.Errorf("creating segment: %w", errors.Join(err, cerr))
		}
	}
	if l.f != nil {
		_ = l.f.Close() // its appends were fsynced when they returned: a close error loses nothing
	}
	l.f = f
	l.segs = append(l.segs, s)
	return nil
}

// Record is one record to append with its time bounds in milliseconds.
type Record struct {
	MinT, MaxT int64
	Data       []byte
}

// Append writes the records and fsyncs them. When it returns nil they are durable.
func (l *Log) Append(recs ...Record) error {
	_, err := l.AppendPos(recs...)
	return err
}

// AppendPos is Append returning the position of each record (for ReadAt).
// Appends that arrive while another one is being fsynced are written
// together with a single fsync (group commit).
func (l *Log) AppendPos(recs ...Record) ([]Pos, error) {
	// An oversized record fails its own append, never the group it would join.
	for _, r := range recs {
		if len(r.Data) > MaxRecordBytes {
			return nil, &RecordTooLargeError{Size: len(r.Data)}
		}
	}
	p := &pendingAppend{recs: recs, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	l.gmu.Lock()
	l.waiting = append(l.waiting, p)
	if l.leading {
		l.gmu.Unlock()
		select {
		case <-p.done:
			return p.pos, p.err
		case <-p.lead:
		}
	} else {
		l.leading = true
		l.gmu.Unlock()
	}
	// Leader: write everything waiting (this append included) with one fsync.
	l.gmu.Lock()
	batch := l.waiting
	l.waiting = nil
	l.gmu.Unlock()
	var all []Record
	for _, b := range batch {
		all = append(all, b.recs...)
	}
	pos, err := l.appendBatch(all)
	for _, b := range batch {
		if err != nil {
			b.err = err
		} else {
			b.pos, pos = pos[:len(b.recs):len(b.recs)], pos[len(b.recs):]
		}
		if b != p {
			close(b.done)
		}
	}
	// Hand leadership to the next waiting append, or give it up.
	l.gmu.Lock()
	if len(l.waiting) > 0 {
		l.waiting[0].lead <- struct{}{}
	} else {
		l.leading = false
	}
	l.gmu.Unlock()
	return p.pos, p.err
}

func (l *Log) appendBatch(recs []Record) ([]Pos, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil, errors.New("seglog: log is closed")
	}
	if l.failed != nil {
		return nil, &WriteError{Dir: l.dir, Err: l.failed, Latched: true}
	}
	cur := l.segs[len(l.segs)-1]
	if cur.size >= l.opts.SegmentBytes {
		if err := l.startSegment(cur.n + 1); err != nil {
			return nil, &WriteError{Dir: l.dir, Err: err}
		}
		cur = l.segs[len(l.segs)-1]
	}
	l.buf = l.buf[:0]
	minT, maxT := cur.minT, cur.maxT
	pos := make([]Pos, 0, len(recs))
	for _, r := range recs {
		pos = append(pos, Pos{cur.n, cur.size + int64(len(l.buf))})
		var hdr [headerSize]byte
		binary.LittleEndian.PutUint32(hdr[0:], uint32(len(r.Data)))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(r.Data, castagnoli))
		binary.LittleEndian.PutUint64(hdr[8:], uint64(r.MinT))
		binary.LittleEndian.PutUint64(hdr[16:], uint64(r.MaxT))
		l.buf = append(l.buf, hdr[:]...)
		l.buf = append(l.buf, r.Data...)
		minT, maxT = min(minT, r.MinT), max(maxT, r.MaxT)
	}
	if _, err := l.f.Write(l.buf); err != nil {
		// Cut the segment so a partial write is never followed by good records,
		// and move the offset back so the next append lands where positions say.
		return nil, l.rewind(cur.size, fmt.Errorf("writing: %w", err))
	}
	if !l.opts.NoSync {
		if err := l.f.Sync(); err != nil {
			return nil, l.rewind(cur.size, fmt.Errorf("fsync: %w", err))
		}
	}
	cur.size += int64(len(l.buf))
	cur.minT, cur.maxT = minT, maxT
	cur.modified = time.Now()
	l.total += int64(len(l.buf))
	if len(l.buf) > 4<<20 {
		l.buf = nil
	}
	l.enforceLocked(time.Now())
	close(l.notify)
	l.notify = make(chan struct{})
	return pos, nil
}

// Enforce applies the size and age limits now.
func (l *Log) Enforce(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.enforceLocked(now)
}

func (l *Log) enforceLocked(now time.Time) {
	for len(l.segs) > 1 {
		s := l.segs[0]
		over := l.opts.MaxBytes > 0 && l.total > l.opts.MaxBytes
		old := l.opts.MaxAge > 0 && now.Sub(s.modified) > l.opts.MaxAge
		if !over && !old {
			return
		}
		l.dropFirstLocked()
	}
}

func (l *Log) dropFirstLocked() {
	s := l.segs[0]
	if l.deleted != nil {
		l.deleted(s.n, -1)
	}
	_ = os.Remove(s.path(l.dir))
	l.total -= s.size
	l.segs = l.segs[1:]
}

// Size is the total size of the segments in bytes.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.total
}

// Close closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

type segView struct {
	n          uint64
	size       int64
	minT, maxT int64
}

func (l *Log) snapshot() []segView {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]segView, len(l.segs))
	for i, s := range l.segs {
		out[i] = segView{s.n, s.size, s.minT, s.maxT}
	}
	return out
}

// ErrStop may be returned by a Scan callback to end the scan early without error.
var ErrStop = errors.New("stop")

// Scan calls fn for every record whose time bounds overlap [mint, maxt],
// oldest segment first. The data slice is only valid during the call.
// Newest-first scanning is available with ScanReverse.
func (l *Log) Scan(mint, maxt int64, fn func(pos Pos, minT, maxT int64, data []byte) error) error {
	for _, s := range l.snapshot() {
		if s.size == 0 || s.maxT < mint || s.minT > maxt {
			continue
		}
		if err := l.scanSegment(s, 0, mint, maxt, fn); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

// ScanReverse is Scan over segments newest first (records within a segment
// still in order), so a caller with a result limit sees the newest data.
func (l *Log) ScanReverse(mint, maxt int64, fn func(pos Pos, minT, maxT int64, data []byte) error) error {
	segs := l.snapshot()
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		if s.size == 0 || s.maxT < mint || s.minT > maxt {
			continue
		}
		if err := l.scanSegment(s, 0, mint, maxt, fn); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (l *Log) scanSegment(s segView, from int64, mint, maxt int64, fn func(pos Pos, minT, maxT int64, data []byte) error) error {
	f, err := os.Open((&segment{n: s.n}).path(l.dir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted by retention meanwhile
		}
		return fmt.Errorf("seglog: %w", err)
	}
	defer func() { _ = f.Close() }() // opened read-only: a close error loses nothing
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return fmt.Errorf("seglog: %w", err)
	}
	r := bufio.NewReaderSize(io.LimitReader(f, s.size-from), 1<<16)
	off := from
	var hdr [headerSize]byte
	var payload []byte
	for off < s.size {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("seglog: segment %d at %d: %w", s.n, off, err)
		}
		n := binary.LittleEndian.Uint32(hdr[0:])
		minT, maxT := int64(binary.LittleEndian.Uint64(hdr[8:])), int64(binary.LittleEndian.Uint64(hdr[16:]))
		if maxT < mint || minT > maxt {
			if _, err := r.Discard(int(n)); err != nil {
				return fmt.Errorf("seglog: segment %d at %d: %w", s.n, off, err)
			}
			off += headerSize + int64(n)
			continue
		}
		if cap(payload) < int(n) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			return fmt.Errorf("seglog: segment %d at %d: %w", s.n, off, err)
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			return fmt.Errorf("seglog: segment %d at %d: checksum mismatch", s.n, off)
		}
		if err := fn(Pos{s.n, off}, minT, maxT, payload); err != nil {
			return err
		}
		off += headerSize + int64(n)
	}
	return nil
}

// next returns the first record at or after pos, the position after it, and
// whether there was one. Segments before pos that were deleted are skipped.
func (l *Log) next(pos Pos) (data []byte, at, after Pos, ok bool, err error) {
	for _, s := range l.snapshot() {
		if s.n < pos.Seg {
			continue
		}
		from := int64(0)
		if s.n == pos.Seg {
			from = pos.Off
		}
		if from >= s.size {
			continue
		}
		err = l.scanSegment(segView{s.n, s.size, s.minT, s.maxT}, from, -1<<63, 1<<63-1, func(p Pos, _, _ int64, d []byte) error {
			data = append([]byte(nil), d...)
			at = p
			after = Pos{p.Seg, p.Off + headerSize + int64(len(d))}
			ok = true
			return ErrStop
		})
		if errors.Is(err, ErrStop) {
			err = nil
		}
		return data, at, after, ok, err
	}
	return nil, Pos{}, Pos{}, false, nil
}

// changed returns a channel closed at the next Append.
func (l *Log) changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.notify
}

// ReadAt returns the record at pos (as returned by AppendPos or Scan), or
// ok=false when its segment was deleted by retention.
func (l *Log) ReadAt(pos Pos) (data []byte, ok bool, err error) {
	data, at, _, ok, err := l.next(pos)
	if err != nil || !ok || at != pos {
		return nil, false, err
	}
	return data, true, nil
}

// rewind drops a failed append: it truncates the active segment to size and
// moves the write offset back to it (the file is not opened with O_APPEND).
// If that fails the log latches: a torn record followed by good ones would
// make the next open drop those.
func (l *Log) rewind(size int64, cause error) error {
	err := l.f.Truncate(size)
	if err == nil {
		_, err = l.f.Seek(size, io.SeekStart)
	}
	if err == nil && !l.opts.NoSync {
		err = l.f.Sync()
	}
	if err != nil {
		l.failed = fmt.Errorf("%w; cutting the failed append off failed too: %w", cause, err)
		return &WriteError{Dir: l.dir, Err: l.failed, Latched: true}
	}
	return &WriteError{Dir: l.dir, Err: cause}
}

// Err is non-nil while the log refuses appends (a failed append could not be
// undone); reopening the log recovers.
func (l *Log) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.failed != nil {
		return &WriteError{Dir: l.dir, Err: l.failed, Latched: true}
	}
	return nil
}
