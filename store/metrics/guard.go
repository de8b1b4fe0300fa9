package metrics

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/durable"
)

// UnavailableError is returned while the store cannot take writes (its WAL
// failed, free space is below the reserve, it holds far-future samples, or it
// is being reopened). Nothing of the request was acknowledged; a sender should
// keep the data and retry after RetryAfter (HTTP 503 with Retry-After).
type UnavailableError struct {
	Reason string // metric label: wal_failed, low_disk, poisoned, reopening, closed
	Msg    string
	After  time.Duration
}

func (e *UnavailableError) Error() string { return e.Msg }

// RetryAfter is how long a sender should wait before retrying.
func (e *UnavailableError) RetryAfter() time.Duration { return e.After }

// Metrics Prometheus's wlog registers that the guard reads: the write-failure
// counters of the head WAL and of the out-of-order WBL (a failed write may
// have torn the log), and the WAL's current segment.
const (
	walWritesFailed = "prometheus_tsdb_wal_writes_failed_total"
	wblWritesFailed = "prometheus_tsdb_out_of_order_wbl_writes_failed_total"
	walSegment      = "prometheus_tsdb_wal_segment_current"
)

// regTracker registers collectors for one open TSDB (or agent WAL) and
// remembers them, so that closing it can unregister every one of them and a
// reopen in the same process can register them again. It also keeps the
// metrics the guard reads.
type regTracker struct {
	r prometheus.Registerer

	mu   sync.Mutex
	cs   []prometheus.Collector
	read map[string][]prometheus.Metric // by name
}

func (t *regTracker) Register(c prometheus.Collector) error {
	if err := t.r.Register(c); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cs = append(t.cs, c)
	if name := describedOneOf(c, walWritesFailed, wblWritesFailed, walSegment); name != "" {
		// A counter's or gauge's Collect sends the metric itself (wrapped for
		// the name prefix): writing it later reads the current value.
		ch := make(chan prometheus.Metric, 4)
		go func() { c.Collect(ch); close(ch) }()
		if t.read == nil {
			t.read = map[string][]prometheus.Metric{}
		}
		for m := range ch {
			t.read[name] = append(t.read[name], m)
		}
	}
	return nil
}

func (t *regTracker) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t *regTracker) Unregister(c prometheus.Collector) bool { return t.r.Unregister(c) }

// take returns the tracked collectors and the metrics read from them, and
// forgets them.
func (t *regTracker) take() ([]prometheus.Collector, map[string][]prometheus.Metric) {
	t.mu.Lock()
	defer t.mu.Unlock()
	all, read := t.cs, t.read
	t.cs, t.read = nil, nil
	return all, read
}

// describedOneOf is the one of names that c describes, or "".
func describedOneOf(c prometheus.Collector, names ...string) string {
	ch := make(chan *prometheus.Desc, 8)
	go func() { c.Describe(ch); close(ch) }()
	found := ""
	for d := range ch {
		s := d.String()
		for _, n := range names {
			if strings.Contains(s, `fqName: "`+n+`"`) {
				found = n
			}
		}
	}
	return found
}

// metricSum is the sum of the current values of counters or gauges.
func metricSum(ms []prometheus.Metric) float64 {
	var sum float64
	for _, m := range ms {
		var pb dto.Metric
		if m.Write(&pb) != nil {
			continue
		}
		if pb.Counter != nil {
			sum += pb.Counter.GetValue()
		}
		if pb.Gauge != nil {
			sum += pb.Gauge.GetValue()
		}
	}
	return sum
}

// instance is one open backend: the TSDB or, in forward-only mode, the agent WAL.
type instance struct {
	poisoned *UnavailableError // the backend holds far-future samples: writes are refused
	gen      uint64            // generation, part of every series reference handed out
	db       *tsdb.DB
	app      storage.AppendableV2
	close    func() error
	failures []prometheus.Metric // WAL write-failure counters of this instance
	baseline float64
	segment  []prometheus.Metric // the WAL's current segment (gauge)

	walDir string // "" without a WAL to cut back
	ackMu  sync.Mutex
	acked  walPos   // end of the last acknowledged write
	segF   *os.File // the current segment, for fstat
	segN   int
}

// walPos is a position in the WAL: a segment and a size.
type walPos struct {
	seg  int
	size int64
}

func (p walPos) less(o walPos) bool { return p.seg < o.seg || (p.seg == o.seg && p.size < o.size) }

// walMark is where the WAL ends now: its current segment and that
// segment's size. An error means it cannot be told (the segment cannot be
// opened or stat'ed); the zero position is never a valid answer, since
// cutting the WAL back to it would drop acknowledged writes.
func (i *instance) walMark() (walPos, error) {
	if i.walDir == "" {
		return walPos{}, nil
	}
	i.ackMu.Lock()
	defer i.ackMu.Unlock()
	seg := i.acked.seg
	if len(i.segment) > 0 {
		seg = int(metricSum(i.segment))
	} else {
		// No gauge: look for a newer segment (one is started when a segment
		// is full and at compaction).
		for {
			if _, err := os.Stat(wlog.SegmentName(i.walDir, seg+1)); err != nil {
				break
			}
			seg++
		}
	}
	if i.segF == nil || i.segN != seg {
		if i.segF != nil {
			_ = i.segF.Close() // opened read-only (to stat it): a close error loses nothing
		}
		f, err := os.Open(wlog.SegmentName(i.walDir, seg))
		if err != nil {
			i.segF = nil
			return walPos{}, err
		}
		i.segF, i.segN = f, seg
	}
	fi, err := i.segF.Stat()
	if err != nil {
		_ = i.segF.Close() // read-only, as above
		i.segF = nil       // opened again next time
		return walPos{}, err
	}
	return walPos{seg: seg, size: fi.Size()}, nil
}

// closeWAL closes what walMark keeps open.
func (i *instance) closeWAL() {
	i.ackMu.Lock()
	defer i.ackMu.Unlock()
	if i.segF != nil {
		_ = i.segF.Close() // read-only, as in walMark
		i.segF = nil
	}
}

// noteAcked moves the acknowledged end of the WAL forward to p.
func (i *instance) noteAcked(p walPos) {
	i.ackMu.Lock()
	defer i.ackMu.Unlock()
	if i.acked.less(p) {
		i.acked = p
	}
}

// cutWAL cuts the WAL of a closed instance back to the end of its last
// acknowledged write. What follows is unacknowledged: records of failed
// commits, which a failed page flush left in the WAL's page buffer and the
// close then wrote out. Without the cut, writes answered with 503 would be
// replayed (and a torn record would make the replay drop what follows it).
func cutWAL(dir string, acked walPos) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var cut int64
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // checkpoints and anything else
		}
		p := filepath.Join(dir, e.Name())
		fi, err := e.Info()
		if err != nil {
			return cut, err
		}
		switch {
		case n > acked.seg:
			if err := os.Remove(p); err != nil {
				return cut, err
			}
			cut += fi.Size()
		case n == acked.seg && fi.Size() > acked.size:
			if err := os.Truncate(p, acked.size); err != nil {
				return cut, err
			}
			cut += fi.Size() - acked.size
		}
	}
	return cut, durable.SyncDir(dir)
}

// walFailed reports whether a WAL write of this instance failed since it was opened.
func (i *instance) walFailed() bool {
	return len(i.failures) > 0 && metricSum(i.failures) > i.baseline
}

// Series references handed out carry the instance generation in their top
// bits: after a reopen the WAL replay may hand an old reference number to
// another series, and a caller's cached reference must then not be used.
const (
	genShift = 48
	refMask  = 1<<genShift - 1
)

// guardOptions tune the guard (tests shorten the intervals).
type guardOptions struct {
	MinFreeBytes    uint64
	CheckInterval   time.Duration
	DrainTimeout    time.Duration
	FreeBytes       func(path string) (uint64, error)
	RetryAfter      time.Duration
	WALSegmentBytes int64
}

// guard is the only way to the backend: every appender and querier goes
// through it. It latches a WAL failure (no later write is acknowledged),
// refuses writes while free space is below the reserve, and reopens the
// backend in process once space is back: new users are turned away with a
// fast UnavailableError (never blocked, so a query that opens several
// queriers cannot deadlock), in-flight ones are waited for, the backend is
// closed and opened again (its replay repairs the torn WAL tail, which holds
// only writes that were never acknowledged) and swapped in.
type guard struct {
	what   string // "TSDB" or "forward WAL", for messages
	dir    string
	walDir string
	logger *slog.Logger
	opts   guardOptions
	open   func(reg prometheus.Registerer) (*instance, error)
	reg    *regTracker
	notify wlog.WriteNotified
	// beforeReplay and afterReplay (may be nil) bracket the WAL replay of an
	// in-process reopen for a series lifecycle hook that counts series.
	beforeReplay, afterReplay func()

	inst    atomic.Pointer[instance]
	refuse  atomic.Pointer[UnavailableError] // non-nil: writes are refused
	latched atomic.Bool                      // a WAL failure is being recovered from
	spaceAt atomic.Int64                     // unix nanos of the last free-space check
	closing atomic.Bool                      // gate shut for everyone
	users   atomic.Int64
	drained chan struct{}
	gen     uint64

	mu         sync.Mutex // state changes
	walErr     error      // the WAL failure being recovered from
	cutPending *instance  // closed after a WAL failure, its WAL not yet cut back
	poisoned   *UnavailableError
	lowDisk    *UnavailableError
	closed     bool
	// The watcher (run) is an actor of main's run group: running says it
	// started, stopped that stopRun ended it (or it may no longer start).
	running, stopped bool
	stop             chan struct{} // closed by stopRun
	done             chan struct{} // closed when run returns

	failedGauge prometheus.Gauge
	failures    prometheus.Counter
	reopens     prometheus.Counter
	refused     *prometheus.CounterVec
	freeGauge   prometheus.Gauge
}

func newGuard(what, dir string, r prometheus.Registerer, logger *slog.Logger, opts guardOptions) (*guard, error) {
	if r == nil {
		r = prometheus.NewRegistry() // the TSDB's own metrics need somewhere to go
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = time.Minute
	}
	if opts.FreeBytes == nil {
		opts.FreeBytes = FreeBytes
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 5 * time.Second
	}
	g := &guard{what: what, dir: dir, walDir: filepath.Join(dir, "wal"), logger: logger, opts: opts,
		reg: &regTracker{r: r}, drained: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		failedGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetgate_storage_wal_failed",
			Help: "1 while a WAL write or fsync has failed and writes are refused (503) until the WAL is reopened."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_storage_wal_failures_total",
			Help: "WAL write failures that made the store refuse writes until it was reopened."}),
		reopens: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_storage_wal_reopens_total",
			Help: "In-process reopens of the store after a WAL failure."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_storage_writes_refused_total",
			Help: "Write requests the store refused with 503, by reason (wal_failed, low_disk, poisoned, reopening, closed)."}, []string{"reason"}),
		freeGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetgate_storage_free_bytes",
			Help: "Free bytes on the filesystem of --storage.path, as last checked."}),
	}
	for _, c := range []prometheus.Collector{g.failedGauge, g.failures, g.reopens, g.refused, g.freeGauge} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("registering storage metrics: %w", err)
		}
	}
	return g, nil
}

// start opens the backend for the first time (the watcher is run, started
// by the owner's Run).
func (g *guard) start(open func(reg prometheus.Registerer) (*instance, error)) error {
	g.open = open
	inst, err := g.openInstance()
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.installLocked(inst)
	g.mu.Unlock()
	if _, err := g.checkSpace(); err != nil {
		g.logger.Warn("checking free space", "err", err)
	}
	return nil
}

func (g *guard) openInstance() (*instance, error) {
	mark := filepath.Join(g.dir, cutMarkFile)
	if p, ok, err := readCutMark(mark); err != nil {
		return nil, fmt.Errorf("reading %s: %w", mark, err)
	} else if ok {
		// A WAL failure was not recovered from before fleetgate stopped:
		// what follows the last acknowledged write is not acknowledged.
		n, err := cutWAL(g.walDir, p)
		if err != nil {
			return nil, fmt.Errorf("cutting the WAL back to the last acknowledged write (%s): %w", mark, err)
		}
		g.logger.Info("cut unacknowledged writes off the WAL after an unrecovered WAL failure", "store", g.what, "bytes", n, "segment", p.seg, "offset", p.size)
	}
	inst, err := g.open(g.reg)
	if err != nil {
		g.unregisterAll()
		return nil, err
	}
	read := g.reg.metricsRead()
	inst.failures = append(read[walWritesFailed], read[wblWritesFailed]...)
	inst.segment = read[walSegment]
	if len(read[walWritesFailed]) == 0 {
		g.logger.Warn("the WAL write-failure counter was not found: a write that races a WAL failure may be acknowledged", "store", g.what)
	}
	inst.baseline = metricSum(inst.failures)
	if err := writeCutMark(mark, walPos{}, false); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.logger.Warn("clearing the WAL cut marker", "file", mark, "err", err)
	}
	if err := prepareCutMark(mark); err != nil {
		g.logger.Warn("the WAL cut marker cannot be prepared: after a crash during a WAL failure, writes refused with 503 may be replayed", "file", mark, "err", err)
	}
	inst.walDir = g.walDir
	if seg, err := newestSegment(g.walDir); err == nil {
		inst.acked = walPos{seg: seg}
		// Everything replayed is acknowledged.
		if inst.acked, err = inst.walMark(); err != nil {
			inst.walDir = ""
			g.logger.Warn("the WAL cannot be cut back after a failure", "store", g.what, "err", err)
		}
	} else {
		inst.walDir = ""
		g.logger.Warn("the WAL cannot be cut back after a failure", "store", g.what, "err", err)
	}
	g.gen = g.gen%(1<<(64-genShift)-1) + 1
	inst.gen = g.gen
	if g.notify != nil {
		setWriteNotified(inst, g.notify)
	}
	return inst, nil
}

func (t *regTracker) metricsRead() map[string][]prometheus.Metric {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string][]prometheus.Metric, len(t.read))
	for k, v := range t.read {
		out[k] = append([]prometheus.Metric(nil), v...)
	}
	return out
}

func (g *guard) unregisterAll() {
	all, _ := g.reg.take()
	for _, c := range all {
		g.reg.r.Unregister(c)
	}
}

// acquire admits one user (an appender or a querier) or refuses it at once.
func (g *guard) acquire() (*instance, error) {
	g.users.Add(1)
	if g.closing.Load() {
		g.release()
		return nil, g.unavailable("reopening", fmt.Sprintf("the %s is being reopened after a WAL failure; retry shortly", g.what))
	}
	inst := g.inst.Load()
	if inst == nil {
		g.release()
		return nil, g.unavailable("closed", fmt.Sprintf("the %s is not open (see the fleetgate log); retry later", g.what))
	}
	return inst, nil
}

func (g *guard) release() {
	if g.users.Add(-1) == 0 && g.closing.Load() {
		select {
		case g.drained <- struct{}{}:
		default:
		}
	}
}

// drain shuts the gate and waits until no user is left; on timeout it
// opens the gate again and reports false.
func (g *guard) drain(timeout time.Duration) bool {
	g.closing.Store(true)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for g.users.Load() != 0 {
		select {
		case <-g.drained:
		case <-t.C:
			if g.users.Load() == 0 {
				return true
			}
			g.closing.Store(false)
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// walName names the WAL in messages: "TSDB WAL" or "forward-only WAL".
func (g *guard) walName() string {
	if strings.HasSuffix(g.what, "WAL") {
		return g.what
	}
	return g.what + " WAL"
}

func (g *guard) unavailable(reason, msg string) *UnavailableError {
	return &UnavailableError{Reason: reason, Msg: msg, After: g.opts.RetryAfter}
}

// refusal is why writes are refused now, or nil.
func (g *guard) refusal() *UnavailableError { return g.refuse.Load() }

// recomputeLocked sets the write refusal from the state; g.mu is held.
func (g *guard) recomputeLocked() {
	var e *UnavailableError
	switch {
	case g.closed:
		e = g.unavailable("closed", fmt.Sprintf("the %s is closed", g.what))
	case g.walErr != nil:
		e = g.unavailable("wal_failed", fmt.Sprintf("the %s failed (%v): writes are refused until it is reopened, which fleetgate does by itself once %s has free space again; retry later", g.walName(), g.walErr, g.dir))
	case g.poisoned != nil:
		e = g.poisoned
	case g.lowDisk != nil:
		e = g.lowDisk
	}
	g.refuse.Store(e)
}

// walFault latches a WAL failure: no later write is acknowledged until the
// backend has been reopened.
func (g *guard) walFault(err error) {
	if g.latched.Load() {
		return // latched already (and g.mu may be held by a long reopen)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.walErr != nil || g.closed {
		return
	}
	g.walErr = err
	g.latched.Store(true)
	if inst := g.inst.Load(); inst != nil {
		g.recordAcked(inst)
	}
	g.recomputeLocked()
	g.failures.Inc()
	g.failedGauge.Set(1)
	free, ferr := g.opts.FreeBytes(g.dir)
	g.logger.Error("WAL write failed: refusing every write with 503 until the WAL is reopened, so that nothing acknowledged can be lost. "+
		"Free space on the storage filesystem (or fix the I/O error); fleetgate reopens the WAL by itself once there is room, and a restart does the same.",
		"store", g.what, "dir", g.dir, "err", err, "free_bytes", free, "free_bytes_err", ferr, "need_bytes", g.needBytes())
}

// installLocked makes inst the backend; g.mu is held.
func (g *guard) installLocked(inst *instance) {
	g.inst.Store(inst)
	g.poisoned = inst.poisoned
	g.recomputeLocked()
}

// ready is nil when the store takes writes, else why not.
func (g *guard) ready() error {
	if e := g.refusal(); e != nil {
		return e
	}
	if g.closing.Load() {
		return g.unavailable("reopening", fmt.Sprintf("the %s is being reopened", g.what))
	}
	return nil
}

// needBytes is the free space a reopen needs: the WAL repair copies the
// segment with the torn record, plus a margin, and at least the reserve.
func (g *guard) needBytes() uint64 {
	var largest int64
	if ents, err := os.ReadDir(g.walDir); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				largest = max(largest, fi.Size())
			}
		}
	}
	return max(uint64(largest)+4<<20, g.opts.MinFreeBytes)
}

// cutMarkFile, in the storage directory, holds the end of the last
// acknowledged WAL write while a WAL failure is being recovered from, so that
// a restart (after a crash while latched) cuts the WAL back like the
// in-process reopen does. It is allocated at open and overwritten in place,
// so that writing it needs no new space on a full disk.
const cutMarkFile = "fleetgate-wal-cut"

const cutMarkSize = 24 // magic, segment, size

var cutMagic = [8]byte{'f', 'g', 'w', 'a', 'l', 'c', 'u', 't'}

// prepareCutMark makes sure the marker file exists with its full size.
func prepareCutMark(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == cutMarkSize {
		return nil
	}
	return durable.WriteFile(path, make([]byte, cutMarkSize), 0o644)
}

// writeCutMark records p in the marker file (an empty p clears it).
func writeCutMark(path string, p walPos, set bool) error {
	var b [cutMarkSize]byte
	if set {
		copy(b[:8], cutMagic[:])
		binary.LittleEndian.PutUint64(b[8:], uint64(p.seg))
		binary.LittleEndian.PutUint64(b[16:], uint64(p.size))
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := f.Sync(); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
}

// readCutMark returns the recorded position, if one is set.
func readCutMark(path string) (walPos, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return walPos{}, false, nil
	}
	if err != nil {
		return walPos{}, false, err
	}
	if len(b) != cutMarkSize || [8]byte(b[:8]) != cutMagic {
		return walPos{}, false, nil
	}
	return walPos{seg: int(binary.LittleEndian.Uint64(b[8:])), size: int64(binary.LittleEndian.Uint64(b[16:]))}, true, nil
}

// newestSegment is the number of the newest WAL segment in dir.
func newestSegment(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	newest := -1
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && e.Type().IsRegular() {
			newest = max(newest, n)
		}
	}
	if newest < 0 {
		return 0, fmt.Errorf("no WAL segment in %s", dir)
	}
	return newest, nil
}

// FreeBytes is the space available to an unprivileged user on the filesystem of path.
func FreeBytes(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// spaceRecheck is how old the last free-space check may be when a commit
// relies on it: a statfs costs about 1.6 µs, so checking at commit time
// (not only on the watcher's tick) is cheap, and closes the window in which
// another writer (the log store, another process) fills the reserve between
// two ticks and the WAL write fails.
const spaceRecheck = time.Millisecond

// freshRefusal is refusal with the low-disk part refreshed unless free
// space was checked less than spaceRecheck ago: appenders are refused, and
// commits stopped before the WAL, as soon as the reserve is reached, and
// accepted again as soon as there is room.
func (g *guard) freshRefusal() *UnavailableError {
	if g.opts.MinFreeBytes == 0 {
		return g.refusal()
	}
	now := time.Now().UnixNano()
	if last := g.spaceAt.Load(); now-last >= int64(spaceRecheck) && g.spaceAt.CompareAndSwap(last, now) {
		if _, err := g.checkSpace(); err != nil {
			g.logger.Warn("checking free space", "err", err)
		}
	}
	return g.refusal()
}

// checkSpace updates the low-disk refusal from the free space.
func (g *guard) checkSpace() (uint64, error) {
	g.spaceAt.Store(time.Now().UnixNano())
	free, err := g.opts.FreeBytes(g.dir)
	if err != nil {
		return 0, err
	}
	g.freeGauge.Set(float64(free))
	if g.opts.MinFreeBytes == 0 {
		return free, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	low := free < g.opts.MinFreeBytes
	switch {
	case low && g.lowDisk == nil:
		g.lowDisk = g.unavailable("low_disk", fmt.Sprintf("%s has %d bytes free, less than storage.min_free_bytes (%d): writes are refused until there is room; retry later", g.dir, free, g.opts.MinFreeBytes))
		g.logger.Error("free space below storage.min_free_bytes: refusing writes with 503", "store", g.what, "dir", g.dir, "free_bytes", free, "min_free_bytes", g.opts.MinFreeBytes)
		g.recomputeLocked()
	case !low && g.lowDisk != nil:
		g.lowDisk = nil
		g.logger.Info("free space back above storage.min_free_bytes: accepting writes", "store", g.what, "free_bytes", free)
		g.recomputeLocked()
	}
	return free, nil
}

// run is the watcher, the store's actor (Store.Run, Agent.Run): every
// CheckInterval it checks free space and reopens the backend after a WAL
// failure once there is room; also (may be nil) runs beside it with the
// same lifetime. It returns when ctx is done or at stopRun (Close).
func (g *guard) run(ctx context.Context, also func(context.Context)) error {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return nil
	}
	if g.running {
		g.mu.Unlock()
		return fmt.Errorf("store %s: Run called twice", g.what)
	}
	g.running = true
	g.mu.Unlock()
	defer close(g.done)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if also != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			also(ctx)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	t := time.NewTicker(g.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.stop:
			return nil
		case <-t.C:
		}
		free, err := g.checkSpace()
		g.mu.Lock()
		failed := g.walErr != nil || g.inst.Load() == nil
		g.mu.Unlock()
		if !failed {
			continue
		}
		if err != nil {
			g.logger.Warn("checking free space", "err", err)
			continue
		}
		if need := g.needBytes(); free < need {
			continue
		}
		g.reopen()
	}
}

// stopRun ends run (and what runs beside it) and waits for it; afterwards
// run returns at once. Close calls it before closing anything.
func (g *guard) stopRun() {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	g.stopped = true
	running := g.running
	g.mu.Unlock()
	close(g.stop)
	if running {
		<-g.done
	}
}

// reopen closes and reopens the backend; g.mu is not held.
func (g *guard) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	if old := g.inst.Load(); old != nil {
		if !g.drain(g.opts.DrainTimeout) {
			g.logger.Warn("reopening the store after a WAL failure: readers or writers still in flight, trying again", "store", g.what, "in_flight", g.users.Load())
			return
		}
		g.inst.Store(nil)
		old.closeWAL()
		if err := old.close(); err != nil {
			g.logger.Warn("closing the failed store before reopening it", "store", g.what, "err", err)
		}
		g.unregisterAll()
		g.cutPending = old
	}
	if old := g.cutPending; old != nil && old.walDir != "" {
		n, err := cutWAL(old.walDir, old.acked)
		if err != nil {
			g.closing.Store(true)
			g.logger.Error("cutting the WAL back to the last acknowledged write failed; fleetgate tries again", "store", g.what, "err", err)
			return
		}
		g.logger.Info("cut unacknowledged writes off the WAL", "store", g.what, "bytes", n, "segment", old.acked.seg, "offset", old.acked.size)
	}
	g.closing.Store(true)
	g.logger.Info("reopening the store after a WAL failure (replaying and repairing the WAL)", "store", g.what, "dir", g.dir)
	start := time.Now()
	if g.beforeReplay != nil {
		g.beforeReplay()
	}
	inst, err := g.openInstance()
	if err != nil {
		g.logger.Error("reopening the store failed; reads and writes are refused (503) and fleetgate tries again. A restart does the same.", "store", g.what, "err", err)
		return
	}
	if g.afterReplay != nil {
		g.afterReplay()
	}
	g.cutPending = nil
	g.walErr = nil
	g.latched.Store(false)
	g.installLocked(inst)
	g.closing.Store(false)
	g.failedGauge.Set(0)
	g.reopens.Inc()
	g.logger.Info("store reopened: the WAL is good again, accepting writes", "store", g.what, "took", time.Since(start))
}

// shutdown stops the watcher, waits for users and closes the backend.
func (g *guard) shutdown() error {
	g.stopRun()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.recomputeLocked()
	defer g.mu.Unlock()
	if !g.drain(10 * time.Second) {
		g.logger.Warn("closing the store with readers or writers still in flight", "store", g.what, "in_flight", g.users.Load())
		g.closing.Store(true)
	}
	inst := g.inst.Swap(nil)
	if inst == nil {
		return nil
	}
	inst.closeWAL()
	err := inst.close()
	g.unregisterAll()
	return err
}

func setWriteNotified(inst *instance, wn wlog.WriteNotified) {
	if n, ok := inst.app.(interface{ SetWriteNotified(wlog.WriteNotified) }); ok {
		n.SetWriteNotified(wn)
	}
}

// recordAcked writes inst's acknowledged WAL end to the cut marker, for a
// restart before the WAL is reopened.
func (g *guard) recordAcked(inst *instance) {
	if inst.walDir == "" {
		return
	}
	inst.ackMu.Lock()
	defer inst.ackMu.Unlock()
	if err := writeCutMark(filepath.Join(g.dir, cutMarkFile), inst.acked, true); err != nil {
		g.logger.Error("recording the last acknowledged WAL write failed: after a crash before the WAL is reopened, writes refused with 503 may be replayed", "err", err)
	}
}

// setWriteNotified makes the backend (and every reopened one) notify wn of WAL writes.
func (g *guard) setWriteNotified(wn wlog.WriteNotified) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.notify = wn
	if inst := g.inst.Load(); inst != nil {
		setWriteNotified(inst, wn)
	}
}

// appenderV2 is the storage.AppendableV2 of the guarded backend.
func (g *guard) appenderV2(ctx context.Context) storage.AppenderV2 {
	if e := g.freshRefusal(); e != nil {
		g.refused.WithLabelValues(e.Reason).Inc()
		return refusedAppender{e}
	}
	inst, err := g.acquire()
	if err != nil {
		var ue *UnavailableError
		errors.As(err, &ue)
		g.refused.WithLabelValues(ue.Reason).Inc()
		return refusedAppender{ue}
	}
	return &guardedAppender{g: g, inst: inst, app: inst.app.AppenderV2(ctx)}
}

var (
	_ storage.ExemplarAppenderV2 = (*guardedAppender)(nil)
	_ storage.ExemplarAppenderV2 = refusedAppender{}
)

// refusedAppender refuses every sample with the reason the store is unavailable.
type refusedAppender struct{ err *UnavailableError }

func (a refusedAppender) Append(storage.SeriesRef, labels.Labels, int64, int64, float64, *histogram.Histogram, *histogram.FloatHistogram, storage.AOptions) (storage.SeriesRef, error) {
	return 0, a.err
}
func (a refusedAppender) AppendExemplars(storage.SeriesRef, labels.Labels, []exemplar.Exemplar) (storage.SeriesRef, error) {
	return 0, a.err
}
func (a refusedAppender) Commit() error   { return a.err }
func (a refusedAppender) Rollback() error { return nil }

type guardedAppender struct {
	g    *guard
	inst *instance
	app  storage.AppenderV2
	done bool
}

func (a *guardedAppender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AOptions) (storage.SeriesRef, error) {
	r, err := a.app.Append(a.inst.localRef(ref), ls, st, t, v, h, fh, opts)
	return a.inst.globalRef(r), err
}

// localRef is the backend's reference for one handed out, 0 (look the
// series up by labels) for one of an earlier instance.
func (i *instance) localRef(ref storage.SeriesRef) storage.SeriesRef {
	if ref == 0 || uint64(ref)>>genShift != i.gen {
		return 0
	}
	return ref & refMask
}

// globalRef is the reference handed out for one of the backend.
func (i *instance) globalRef(r storage.SeriesRef) storage.SeriesRef {
	if r == 0 {
		return 0
	}
	return r&refMask | storage.SeriesRef(i.gen<<genShift)
}

// AppendExemplars implements storage.ExemplarAppenderV2 when the backend does.
func (a *guardedAppender) AppendExemplars(ref storage.SeriesRef, ls labels.Labels, es []exemplar.Exemplar) (storage.SeriesRef, error) {
	ea, ok := a.app.(storage.ExemplarAppenderV2)
	if !ok {
		return 0, fmt.Errorf("the %s does not take exemplars", a.g.what)
	}
	ref = a.inst.localRef(ref)
	r, err := ea.AppendExemplars(ref, ls, es)
	return a.inst.globalRef(r), err
}

func (a *guardedAppender) finish() {
	if !a.done {
		a.done = true
		a.g.release()
	}
}

// Commit writes the WAL. A failed commit latches the WAL failure; so does a
// commit that succeeded after another write to the same WAL failed (its
// records may follow a torn one and be dropped by the repair on reopen).
func (a *guardedAppender) Commit() error {
	if a.done {
		return tsdb.ErrAppenderClosed
	}
	if e := a.g.freshRefusal(); e != nil {
		// The reserve is reached: nothing of this request reaches the WAL.
		if err := a.Rollback(); err != nil {
			return err
		}
		a.g.refused.WithLabelValues(e.Reason).Inc()
		return e
	}
	err := a.app.Commit()
	concurrent := false
	var markErr error
	if err == nil {
		// Still a user of the guard: a reopen cannot start before the end
		// of this acknowledged write is noted.
		var mark walPos
		mark, markErr = a.inst.walMark()
		if a.g.latched.Load() || a.inst.walFailed() {
			concurrent = true
		} else if markErr == nil {
			a.inst.noteAcked(mark)
			if a.g.latched.Load() {
				a.g.recordAcked(a.inst) // the latch raced this write: keep the marker at its end
			}
		}
	}
	a.finish()
	switch {
	case err != nil:
		a.g.walFault(err)
		a.g.refused.WithLabelValues("wal_failed").Inc()
		return &UnavailableError{Reason: "wal_failed", After: a.g.opts.RetryAfter,
			Msg: fmt.Sprintf("the %s failed, nothing of this request was stored: %v; retry later", a.g.walName(), err)}
	case concurrent:
		a.g.walFault(errors.New("a concurrent WAL write failed"))
		a.g.refused.WithLabelValues("wal_failed").Inc()
		return &UnavailableError{Reason: "wal_failed", After: a.g.opts.RetryAfter,
			Msg: fmt.Sprintf("the %s failed during this request; it is not acknowledged; retry later", a.g.walName())}
	case markErr != nil:
		// Its end is not noted: a later WAL failure could cut it off again.
		a.g.refused.WithLabelValues("wal_failed").Inc()
		return &UnavailableError{Reason: "wal_failed", After: a.g.opts.RetryAfter,
			Msg: fmt.Sprintf("the end of this write in the %s could not be read (%v); it is not acknowledged; retry later", a.g.walName(), markErr)}
	}
	return nil
}

func (a *guardedAppender) Rollback() error {
	if a.done {
		return nil
	}
	err := a.app.Rollback() // logs the series created meanwhile to the WAL
	a.finish()
	if err != nil {
		a.g.walFault(fmt.Errorf("rollback: %w", err))
	}
	return err
}
