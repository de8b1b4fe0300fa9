// Package traces is the embedded trace store: recent spans on disk in a
// bounded segment log (size and age limits, fsynced before a push is
// acknowledged), one record per trace per push, with an in-memory index of
// trace IDs and of tag values for search. It is meant for recent traces of
// a small fleet; Tempo is the scale-out path.
package traces

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/store/seglog"
)

// Config of the trace store.
type Config struct {
	// Disabled turns the embedded store off (forward-only).
	Disabled bool `yaml:"disabled"`
	// MaxBytes bounds the store on disk (default 1 GiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Retention is the age limit (default 3d).
	Retention model.Duration `yaml:"retention"`
	// MaxTraces bounds the in-memory trace ID index (default 1000000).
	MaxTraces int `yaml:"max_traces"`
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
	if c.MaxTraces < 0 {
		return fmt.Errorf("max_traces: must not be negative, got %d", c.MaxTraces)
	}
	return nil
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{MaxBytes: 1 << 30, Retention: model.Duration(72 * time.Hour), MaxTraces: 1_000_000}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.Retention == 0 {
		c.Retention = d.Retention
	}
	if c.MaxTraces == 0 {
		c.MaxTraces = d.MaxTraces
	}
	return c
}

const (
	maxTagValues = 1000
	maxTags      = 500
)

type traceEntry struct {
	pos  []seglog.Pos
	maxT int64
}

// Store is safe for concurrent use.
type Store struct {
	cfg    Config
	log    *seglog.Log
	logger *slog.Logger

	mu     sync.RWMutex
	traces map[pcommon.TraceID]*traceEntry
	tags   map[string]map[string]struct{} // scope-qualified tag -> values

	spans prometheus.Counter
	size  prometheus.GaugeFunc
}

// Open opens the store in dir (dir/traces), rebuilding the indexes.
func Open(dir string, cfg Config, r prometheus.Registerer, logger *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l, err := seglog.Open(filepath.Join(dir, "traces"), seglog.Options{MaxBytes: cfg.MaxBytes, MaxAge: time.Duration(cfg.Retention)})
	if err != nil {
		return nil, fmt.Errorf("opening trace store: %w", err)
	}
	s := &Store{cfg: cfg, log: l, logger: logger, traces: map[pcommon.TraceID]*traceEntry{}, tags: map[string]map[string]struct{}{},
		spans: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_traces_store_spans_total", Help: "Spans written to the embedded trace store."}),
	}
	s.size = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetgate_traces_store_bytes", Help: "Size of the embedded trace store on disk."},
		func() float64 { return float64(s.log.Size()) })
	if r != nil {
		for _, c := range []prometheus.Collector{s.spans, s.size} {
			if err := r.Register(c); err != nil {
				return nil, errors.Join(fmt.Errorf("registering trace store metrics: %w", err), l.Close())
			}
		}
	}
	var um ptrace.ProtoUnmarshaler
	err = l.Scan(-1<<63, 1<<63-1, func(pos seglog.Pos, _, maxT int64, data []byte) error {
		if len(data) < 16 {
			return errors.New("corrupt trace record")
		}
		var id pcommon.TraceID
		copy(id[:], data[:16])
		s.indexTrace(id, pos, maxT)
		td, err := um.UnmarshalTraces(data[16:])
		if err != nil {
			return fmt.Errorf("decoding trace record: %w", err)
		}
		s.indexTags(td)
		return nil
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("rebuilding trace index: %w", err), l.Close())
	}
	return s, nil
}

func (s *Store) indexTrace(id pcommon.TraceID, pos seglog.Pos, maxT int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.traces[id]
	if e == nil {
		if len(s.traces) >= s.cfg.MaxTraces {
			s.pruneLocked(time.Now().Add(-time.Duration(s.cfg.Retention)).UnixMilli(), true)
		}
		e = &traceEntry{}
		s.traces[id] = e
	}
	e.pos = append(e.pos, pos)
	e.maxT = max(e.maxT, maxT)
}

// pruneLocked drops index entries older than before; when still over the
// limit and force is set, it drops the oldest tenth.
func (s *Store) pruneLocked(before int64, force bool) {
	for id, e := range s.traces {
		if e.maxT < before {
			delete(s.traces, id)
		}
	}
	if force && len(s.traces) >= s.cfg.MaxTraces {
		ts := make([]int64, 0, len(s.traces))
		for _, e := range s.traces {
			ts = append(ts, e.maxT)
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		cut := ts[len(ts)/10]
		for id, e := range s.traces {
			if e.maxT <= cut {
				delete(s.traces, id)
			}
		}
	}
}

func (s *Store) addTag(k, v string) {
	vs := s.tags[k]
	if vs == nil {
		if len(s.tags) >= maxTags {
			return
		}
		vs = map[string]struct{}{}
		s.tags[k] = vs
	}
	if len(vs) < maxTagValues {
		vs[v] = struct{}{}
	}
}

func (s *Store) indexTags(td ptrace.Traces) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		rs.Resource().Attributes().Range(func(k string, v pcommon.Value) bool {
			s.addTag("resource."+k, v.AsString())
			return true
		})
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				sp := spans.At(k)
				s.addTag("name", sp.Name())
				sp.Attributes().Range(func(k string, v pcommon.Value) bool {
					s.addTag("span."+k, v.AsString())
					return true
				})
			}
		}
	}
}

// PushTraces stores the traces durably, one record per trace ID
// (implements logtrace.TracesSink).
func (s *Store) PushTraces(_ context.Context, td ptrace.Traces) error {
	byTrace := splitByTrace(td)
	ids := make([]pcommon.TraceID, 0, len(byTrace))
	for id := range byTrace {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return string(ids[i][:]) < string(ids[j][:]) })
	var m ptrace.ProtoMarshaler
	recs := make([]seglog.Record, 0, len(ids))
	for _, id := range ids {
		part := byTrace[id]
		b, err := m.MarshalTraces(part.td)
		if err != nil {
			return fmt.Errorf("encoding trace %s: %w", hex.EncodeToString(id[:]), err)
		}
		data := make([]byte, 16+len(b))
		copy(data, id[:])
		copy(data[16:], b)
		recs = append(recs, seglog.Record{MinT: part.minT, MaxT: part.maxT, Data: data})
	}
	pos, err := s.log.AppendPos(recs...)
	if err != nil {
		return fmt.Errorf("trace store: %w", err)
	}
	for i, id := range ids {
		s.indexTrace(id, pos[i], recs[i].MaxT)
	}
	s.indexTags(td)
	s.spans.Add(float64(td.SpanCount()))
	return nil
}

type tracePart struct {
	td         ptrace.Traces
	minT, maxT int64 // ms
}

// splitByTrace regroups spans by trace ID, keeping resource and scope.
func splitByTrace(td ptrace.Traces) map[pcommon.TraceID]*tracePart {
	out := map[pcommon.TraceID]*tracePart{}
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			ss := sss.At(j)
			spans := ss.Spans()
			// Resource/scope copies per trace within this scope.
			local := map[pcommon.TraceID]ptrace.SpanSlice{}
			for k := range spans.Len() {
				sp := spans.At(k)
				id := sp.TraceID()
				part := out[id]
				if part == nil {
					part = &tracePart{td: ptrace.NewTraces(), minT: 1 << 62, maxT: -1 << 62}
					out[id] = part
				}
				dst, ok := local[id]
				if !ok {
					nrs := part.td.ResourceSpans().AppendEmpty()
					rs.Resource().CopyTo(nrs.Resource())
					nrs.SetSchemaUrl(rs.SchemaUrl())
					nss := nrs.ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(nss.Scope())
					nss.SetSchemaUrl(ss.SchemaUrl())
					dst = nss.Spans()
					local[id] = dst
				}
				sp.CopyTo(dst.AppendEmpty())
				st, en := int64(sp.StartTimestamp())/1e6, int64(sp.EndTimestamp())/1e6
				part.minT, part.maxT = min(part.minT, st, en), max(part.maxT, st, en)
			}
		}
	}
	return out
}

// Err is non-nil while the store refuses writes (see seglog.Log.Err).
func (s *Store) Err() error { return s.log.Err() }

// ErrNotFound is returned by Trace for an unknown trace ID.
var ErrNotFound = errors.New("trace not found")

// Trace returns all stored spans of a trace.
func (s *Store) Trace(_ context.Context, id pcommon.TraceID) (ptrace.Traces, error) {
	s.mu.RLock()
	e := s.traces[id]
	var pos []seglog.Pos
	if e != nil {
		pos = append(pos, e.pos...)
	}
	s.mu.RUnlock()
	out := ptrace.NewTraces()
	var um ptrace.ProtoUnmarshaler
	for _, p := range pos {
		data, ok, err := s.log.ReadAt(p)
		if err != nil {
			return out, err
		}
		if !ok {
			continue
		}
		td, err := um.UnmarshalTraces(data[16:])
		if err != nil {
			return out, fmt.Errorf("decoding trace record: %w", err)
		}
		td.ResourceSpans().MoveAndAppendTo(out.ResourceSpans())
	}
	if out.ResourceSpans().Len() == 0 {
		return out, ErrNotFound
	}
	return out, nil
}

// Summary describes a trace found by Search, in Tempo's search result shape.
type Summary struct {
	TraceID           string `json:"traceID"`
	RootServiceName   string `json:"rootServiceName"`
	RootTraceName     string `json:"rootTraceName"`
	StartTimeUnixNano string `json:"startTimeUnixNano"`
	DurationMs        int64  `json:"durationMs"`

	start, end uint64
	matched    bool
}

// Condition is one span condition of a search: the tag (`name`, `status`,
// `resource.<attr>`, `span.<attr>` or `.<attr>` for either) equals the value.
type Condition struct {
	Tag, Value string
}

// maxSearchCandidates bounds the traces one search holds in memory.
const maxSearchCandidates = 100_000

// Search returns up to limit traces (newest first) with a span in
// [mint, maxt] (ms) that meets every condition.
func (s *Store) Search(ctx context.Context, mint, maxt int64, conds []Condition, limit int) ([]Summary, error) {
	return s.SearchVisible(ctx, mint, maxt, conds, limit, nil)
}

// SearchVisible is Search over the spans whose resource visible accepts
// (every span when nil): other spans are never read, so they neither
// match nor shape a summary (a reader's scope).
func (s *Store) SearchVisible(ctx context.Context, mint, maxt int64, conds []Condition, limit int, visible func(resource pcommon.Map) bool) ([]Summary, error) {
	found := map[pcommon.TraceID]*Summary{}
	var um ptrace.ProtoUnmarshaler
	n, matched := 0, 0
	err := s.log.ScanReverse(mint, maxt, func(_ seglog.Pos, _, _ int64, data []byte) error {
		if n++; n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		var id pcommon.TraceID
		copy(id[:], data[:16])
		sum := found[id]
		if sum == nil && (matched >= limit || len(found) >= maxSearchCandidates) {
			return nil // enough results from newer segments; only extend known traces
		}
		td, err := um.UnmarshalTraces(data[16:])
		if err != nil {
			return fmt.Errorf("decoding trace record: %w", err)
		}
		rss := td.ResourceSpans()
		for i := range rss.Len() {
			rs := rss.At(i)
			if visible != nil && !visible(rs.Resource().Attributes()) {
				continue
			}
			if sum == nil {
				sum = &Summary{TraceID: hex.EncodeToString(id[:]), start: 1<<64 - 1}
				found[id] = sum
			}
			svc, _ := rs.Resource().Attributes().Get("service.name")
			sss := rs.ScopeSpans()
			for j := range sss.Len() {
				spans := sss.At(j).Spans()
				for k := range spans.Len() {
					sp := spans.At(k)
					sum.start = min(sum.start, uint64(sp.StartTimestamp()))
					sum.end = max(sum.end, uint64(sp.EndTimestamp()))
					if sp.ParentSpanID().IsEmpty() {
						sum.RootServiceName, sum.RootTraceName = svc.AsString(), sp.Name()
					}
					if !sum.matched && spanMatches(rs.Resource().Attributes(), sp, conds) {
						sum.matched = true
						matched++
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(found))
	for _, sum := range found {
		if !sum.matched {
			continue
		}
		sum.StartTimeUnixNano = fmt.Sprint(sum.start)
		sum.DurationMs = int64(sum.end-sum.start) / 1e6
		if sum.RootServiceName == "" {
			sum.RootServiceName = "<root span not yet received>"
		}
		out = append(out, *sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start > out[j].start })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func spanMatches(res pcommon.Map, sp ptrace.Span, conds []Condition) bool {
	for _, c := range conds {
		var ok bool
		switch {
		case c.Tag == "name":
			ok = sp.Name() == c.Value
		case c.Tag == "status":
			ok = strings.EqualFold(statusName(sp.Status().Code()), c.Value)
		case strings.HasPrefix(c.Tag, "resource."):
			ok = attrEquals(res, strings.TrimPrefix(c.Tag, "resource."), c.Value)
		case strings.HasPrefix(c.Tag, "span."):
			ok = attrEquals(sp.Attributes(), strings.TrimPrefix(c.Tag, "span."), c.Value)
		default:
			k := strings.TrimPrefix(c.Tag, ".")
			ok = attrEquals(sp.Attributes(), k, c.Value) || attrEquals(res, k, c.Value)
		}
		if !ok {
			return false
		}
	}
	return true
}

func statusName(c ptrace.StatusCode) string {
	switch c {
	case ptrace.StatusCodeOk:
		return "ok"
	case ptrace.StatusCodeError:
		return "error"
	}
	return "unset"
}

func attrEquals(m pcommon.Map, k, v string) bool {
	x, ok := m.Get(k)
	return ok && x.AsString() == v
}

// Tags returns the known tags, scope-qualified (resource.x, span.x, name).
func (s *Store) Tags() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.tags))
	for k := range s.tags {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TagValues returns the known values of a tag; an unqualified tag (x or .x)
// merges resource.x and span.x.
func (s *Store) TagValues(tag string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	set := map[string]struct{}{}
	keys := []string{tag}
	if !strings.HasPrefix(tag, "resource.") && !strings.HasPrefix(tag, "span.") && tag != "name" {
		k := strings.TrimPrefix(tag, ".")
		keys = []string{"resource." + k, "span." + k}
	}
	for _, k := range keys {
		for v := range s.tags[k] {
			set[v] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// TagsVisible returns the tags (as Tags) of the spans in [mint, maxt] (ms)
// whose resource visible accepts, read from the records themselves rather
// than the index (which does not know clusters).
func (s *Store) TagsVisible(ctx context.Context, mint, maxt int64, visible func(resource pcommon.Map) bool) ([]string, error) {
	set := map[string]struct{}{}
	err := s.scanVisible(ctx, mint, maxt, visible, func(tag, _ string) {
		if len(set) < maxTags {
			set[tag] = struct{}{}
		}
	})
	return sortedKeys(set), err
}

// TagValuesVisible returns the values (as TagValues) of tag on the spans in
// [mint, maxt] (ms) whose resource visible accepts.
func (s *Store) TagValuesVisible(ctx context.Context, mint, maxt int64, tag string, visible func(resource pcommon.Map) bool) ([]string, error) {
	keys := []string{tag}
	if !strings.HasPrefix(tag, "resource.") && !strings.HasPrefix(tag, "span.") && tag != "name" {
		k := strings.TrimPrefix(tag, ".")
		keys = []string{"resource." + k, "span." + k}
	}
	set := map[string]struct{}{}
	err := s.scanVisible(ctx, mint, maxt, visible, func(t, v string) {
		if len(set) < maxTagValues && (t == keys[0] || len(keys) > 1 && t == keys[1]) {
			set[v] = struct{}{}
		}
	})
	return sortedKeys(set), err
}

// scanVisible calls fn with every scope-qualified tag and value of the
// visible spans in [mint, maxt].
func (s *Store) scanVisible(ctx context.Context, mint, maxt int64, visible func(pcommon.Map) bool, fn func(tag, value string)) error {
	var um ptrace.ProtoUnmarshaler
	n := 0
	return s.log.Scan(mint, maxt, func(_ seglog.Pos, _, _ int64, data []byte) error {
		if n++; n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		td, err := um.UnmarshalTraces(data[16:])
		if err != nil {
			return fmt.Errorf("decoding trace record: %w", err)
		}
		rss := td.ResourceSpans()
		for i := range rss.Len() {
			rs := rss.At(i)
			if visible != nil && !visible(rs.Resource().Attributes()) {
				continue
			}
			rs.Resource().Attributes().Range(func(k string, v pcommon.Value) bool {
				fn("resource."+k, v.AsString())
				return true
			})
			sss := rs.ScopeSpans()
			for j := range sss.Len() {
				spans := sss.At(j).Spans()
				for k := range spans.Len() {
					sp := spans.At(k)
					fn("name", sp.Name())
					sp.Attributes().Range(func(k string, v pcommon.Value) bool {
						fn("span."+k, v.AsString())
						return true
					})
				}
			}
		}
		return nil
	})
}

func sortedKeys(set map[string]struct{}) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
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
			s.pruneLocked(now.Add(-time.Duration(s.cfg.Retention)).UnixMilli(), false)
			s.mu.Unlock()
		}
	}
}

// Close closes the store.
func (s *Store) Close() error { return s.log.Close() }
