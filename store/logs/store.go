// Package logs is the embedded log store: recent log streams on disk in a
// bounded segment log (size and age limits, fsynced before a push is
// acknowledged), with an in-memory index of stream label sets. It is meant
// for recent logs of a small fleet; Loki is the scale-out path.
package logs

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/fleetgate/fleetgate/store/seglog"
)

// Config of the log store.
type Config struct {
	// Disabled turns the embedded store off (forward-only).
	Disabled bool `yaml:"disabled"`
	// MaxBytes bounds the store on disk (default 1 GiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Retention is the age limit (default 7d).
	Retention model.Duration `yaml:"retention"`
	// MaxStreams bounds the in-memory stream index (default 100000). When it
	// is full, the stream written longest ago leaves the index: its lines stay
	// on disk but queries find them again only once it is written again.
	MaxStreams int `yaml:"max_streams"`
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	if c.MaxBytes < 0 {
		return fmt.Errorf("max_bytes: must not be negative, got %d", c.MaxBytes)
	}
	if c.Retention < 0 {
		return fmt.Errorf("retention: must not be negative, got %s", c.Retention)
	}
	if c.MaxStreams < 0 {
		return fmt.Errorf("max_streams: must not be negative, got %d", c.MaxStreams)
	}
	return nil
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{MaxBytes: 1 << 30, Retention: model.Duration(7 * 24 * time.Hour), MaxStreams: 100_000}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.Retention == 0 {
		c.Retention = d.Retention
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = d.MaxStreams
	}
	return c
}

type streamInfo struct {
	ls         labels.Labels
	key        string
	minT, maxT int64         // ms
	elem       *list.Element // in Store.order
}

// Store is safe for concurrent use.
type Store struct {
	cfg    Config
	log    *seglog.Log
	parser parser.Parser
	logger *slog.Logger

	mu      sync.RWMutex
	streams map[string]*streamInfo // by label string
	order   *list.List             // of *streamInfo, most recently written first

	lines, bytes, evicted prometheus.Counter
	diskBytes             prometheus.GaugeFunc
}

// Open opens the store in dir (dir/logs), rebuilding the stream index.
func Open(dir string, cfg Config, r prometheus.Registerer, logger *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l, err := seglog.Open(filepath.Join(dir, "logs"), seglog.Options{MaxBytes: cfg.MaxBytes, MaxAge: time.Duration(cfg.Retention)})
	if err != nil {
		return nil, fmt.Errorf("opening log store: %w", err)
	}
	s := &Store{cfg: cfg, log: l, parser: parser.NewParser(parser.Options{}), logger: logger, streams: map[string]*streamInfo{}, order: list.New(),
		lines: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_logs_store_lines_total", Help: "Log lines written to the embedded log store."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_logs_store_written_bytes_total", Help: "Bytes written to the embedded log store."}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_logs_store_evicted_streams_total",
			Help: "Streams dropped from the full stream index (logs_storage.max_streams), the one written longest ago first."}),
	}
	s.diskBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetgate_logs_store_bytes", Help: "Size of the embedded log store on disk."},
		func() float64 { return float64(s.log.Size()) })
	if r != nil {
		for _, c := range []prometheus.Collector{s.lines, s.bytes, s.evicted, s.diskBytes} {
			if err := r.Register(c); err != nil {
				return nil, errors.Join(fmt.Errorf("registering log store metrics: %w", err), l.Close())
			}
		}
	}
	err = l.Scan(-1<<63, 1<<63-1, func(_ seglog.Pos, minT, maxT int64, data []byte) error {
		lstr, _, err := splitRecord(data)
		if err != nil {
			return err
		}
		return s.index(string(lstr), minT, maxT)
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("rebuilding log stream index: %w", err), l.Close())
	}
	return s, nil
}

// index records a write of stream lstr: O(1) besides parsing a new
// stream's labels (done outside the lock); when the index is full the
// stream written longest ago leaves it.
func (s *Store) index(lstr string, minT, maxT int64) error {
	s.mu.RLock()
	_, known := s.streams[lstr]
	s.mu.RUnlock()
	var ls labels.Labels
	if !known {
		var err error
		if ls, err = s.parser.ParseMetric(lstr); err != nil {
			return fmt.Errorf("stream %q: %w", lstr, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	si := s.streams[lstr]
	if si == nil {
		if ls.IsEmpty() { // indexed meanwhile, then evicted again
			var err error
			if ls, err = s.parser.ParseMetric(lstr); err != nil {
				return fmt.Errorf("stream %q: %w", lstr, err)
			}
		}
		for len(s.streams) >= s.cfg.MaxStreams {
			s.removeLocked(s.order.Back().Value.(*streamInfo))
			s.evicted.Inc()
		}
		si = &streamInfo{ls: ls, key: lstr, minT: minT, maxT: maxT}
		si.elem = s.order.PushFront(si)
		s.streams[lstr] = si
		return nil
	}
	s.order.MoveToFront(si.elem)
	si.minT, si.maxT = min(si.minT, minT), max(si.maxT, maxT)
	return nil
}

func (s *Store) removeLocked(si *streamInfo) {
	s.order.Remove(si.elem)
	delete(s.streams, si.key)
}

// pruneLocked drops streams with nothing newer than before, from the one
// written longest ago, stopping at the first one still within.
func (s *Store) pruneLocked(before int64) {
	for e := s.order.Back(); e != nil; {
		si := e.Value.(*streamInfo)
		if si.maxT >= before {
			return
		}
		e = e.Prev()
		s.removeLocked(si)
	}
}

// record layout: uvarint label-string length, label string, push.Stream protobuf without labels.
func splitRecord(data []byte) (lstr, stream []byte, err error) {
	n, k := binary.Uvarint(data)
	if k <= 0 || uint64(len(data)-k) < n {
		return nil, nil, errors.New("corrupt log record")
	}
	return data[k : k+int(n)], data[k+int(n):], nil
}

// PushLogs stores the streams durably (implements logtrace.LogsSink).
func (s *Store) PushLogs(_ context.Context, streams []push.Stream) error {
	recs := make([]seglog.Record, 0, len(streams))
	total, lines := 0, 0
	for i := range streams {
		st := streams[i]
		if len(st.Entries) == 0 {
			continue
		}
		lstr := st.Labels
		st.Labels = ""
		size := st.Size()
		buf := make([]byte, binary.MaxVarintLen64+len(lstr)+size)
		n := binary.PutUvarint(buf, uint64(len(lstr)))
		n += copy(buf[n:], lstr)
		m, err := st.MarshalTo(buf[n:])
		if err != nil {
			return fmt.Errorf("encoding log stream %s: %w", lstr, err)
		}
		minT, maxT := int64(1<<62), int64(-1<<62)
		for _, e := range st.Entries {
			t := e.Timestamp.UnixMilli()
			minT, maxT = min(minT, t), max(maxT, t)
		}
		recs = append(recs, seglog.Record{MinT: minT, MaxT: maxT, Data: buf[:n+m]})
		total += n + m
		lines += len(st.Entries)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := s.log.Append(recs...); err != nil {
		return fmt.Errorf("log store: %w", err)
	}
	// From here on the lines are durable: an index error must not make the
	// sender retry (and store them twice).
	for i := range recs {
		lstr, _, _ := splitRecord(recs[i].Data)
		if err := s.index(string(lstr), recs[i].MinT, recs[i].MaxT); err != nil {
			s.logger.Error("indexing a stored log stream", "err", err)
		}
	}
	s.lines.Add(float64(lines))
	s.bytes.Add(float64(total))
	return nil
}

// Select calls fn for every entry of streams matching ms with a timestamp
// in [mint, maxt] (nanoseconds), segment by segment; newestFirst visits the
// newest segments first (entries are not globally sorted: callers sort).
func (s *Store) Select(ctx context.Context, mint, maxt int64, ms []*labels.Matcher, newestFirst bool, fn func(ls labels.Labels, lstr string, e *push.Entry) error) error {
	s.mu.RLock()
	match := make(map[string]labels.Labels)
	for k, si := range s.streams {
		if matches(si.ls, ms) {
			match[k] = si.ls
		}
	}
	s.mu.RUnlock()
	if len(match) == 0 {
		return nil
	}
	scan := s.log.Scan
	if newestFirst {
		scan = s.log.ScanReverse
	}
	var st push.Stream
	n := 0
	return scan(floorMs(mint), ceilMs(maxt), func(_ seglog.Pos, _, _ int64, data []byte) error {
		if n++; n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		lstr, body, err := splitRecord(data)
		if err != nil {
			return err
		}
		ls, ok := match[string(lstr)]
		if !ok {
			return nil
		}
		st.Entries = st.Entries[:0]
		if err := st.Unmarshal(body); err != nil {
			return fmt.Errorf("decoding log record: %w", err)
		}
		lk := string(lstr)
		for i := range st.Entries {
			e := &st.Entries[i]
			if t := e.Timestamp.UnixNano(); t < mint || t > maxt {
				continue
			}
			if err := fn(ls, lk, e); err != nil {
				return err
			}
		}
		return nil
	})
}

func floorMs(ns int64) int64 { return ns / 1e6 }
func ceilMs(ns int64) int64 {
	if ns > (1<<63-1)-1e6 {
		return 1<<63 - 1
	}
	return (ns + 1e6 - 1) / 1e6
}

func matches(ls labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// Series returns the label sets of streams matching any of the matcher sets
// (all streams when none) with data overlapping [mint, maxt] (ns), sorted.
func (s *Store) Series(mint, maxt int64, sets [][]*labels.Matcher) []labels.Labels {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []labels.Labels
	for _, si := range s.streams {
		if si.maxT < floorMs(mint) || si.minT > ceilMs(maxt) {
			continue
		}
		ok := len(sets) == 0
		for _, ms := range sets {
			if matches(si.ls, ms) {
				ok = true
				break
			}
		}
		if ok {
			out = append(out, si.ls)
		}
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i], out[j]) < 0 })
	return out
}

// Run applies the age limit every minute until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.log.Enforce(now)
			s.mu.Lock()
			s.pruneLocked(now.Add(-time.Duration(s.cfg.Retention)).UnixMilli())
			s.mu.Unlock()
		}
	}
}

// Err is non-nil while the store refuses writes (see seglog.Log.Err).
func (s *Store) Err() error { return s.log.Err() }

// Close closes the store.
func (s *Store) Close() error { return s.log.Close() }
