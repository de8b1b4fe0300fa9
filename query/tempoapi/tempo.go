// Package tempoapi serves the part of Tempo's HTTP API Grafana's Tempo
// datasource calls over the embedded trace store; a reader only ever reads
// the spans of its clusters.
package tempoapi

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/internal/httpapi"
	"github.com/fleetgate/fleetgate/store/traces"
)

// TraceStore is what the Tempo read API needs of the embedded trace store.
type TraceStore interface {
	Trace(ctx context.Context, id pcommon.TraceID) (ptrace.Traces, error)
	// SearchVisible, TagsVisible and TagValuesVisible only read spans whose
	// resource visible accepts (all when nil): a reader's scope.
	SearchVisible(ctx context.Context, mint, maxt int64, conds []traces.Condition, limit int, visible func(pcommon.Map) bool) ([]traces.Summary, error)
	TagsVisible(ctx context.Context, mint, maxt int64, visible func(pcommon.Map) bool) ([]string, error)
	TagValuesVisible(ctx context.Context, mint, maxt int64, tag string, visible func(pcommon.Map) bool) ([]string, error)
	// Tags and TagValues answer from the index (every cluster).
	Tags() []string
	TagValues(tag string) []string
}

// API serves the part of Tempo's HTTP API Grafana's Tempo datasource
// calls: trace by ID, search by tags (and TraceQL equality conditions joined
// by &&), tag names and values. Tempo is the scale-out path.
type API struct {
	store TraceStore
	now   func() time.Time
}

// New builds the API over a trace store.
func New(st TraceStore) *API { return &API{store: st, now: time.Now} }

// Register mounts the endpoints on mux.
func (a *API) Register(mux httpapi.Mux) {
	mux.HandleFunc("GET /api/traces/{id}", a.trace)
	mux.HandleFunc("GET /api/v2/traces/{id}", a.traceV2)
	mux.HandleFunc("GET /api/search", a.search)
	mux.HandleFunc("GET /api/search/tags", a.tags)
	mux.HandleFunc("GET /api/v2/search/tags", a.tagsV2)
	mux.HandleFunc("GET /api/search/tag/{tag}/values", a.tagValues)
	mux.HandleFunc("GET /api/v2/search/tag/{tag}/values", a.tagValuesV2)
	mux.HandleFunc("GET /api/echo", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("echo")) })
}

// traceScope returns the resource filter of r's scope (nil: every cluster);
// ok is false (and a 500 written) when r carries no scope.
func traceScope(w http.ResponseWriter, r *http.Request) (func(pcommon.Map) bool, bool) {
	scope, ok := access.ScopeFrom(r.Context())
	if !ok {
		http.Error(w, access.ErrNoScope.Error(), http.StatusInternalServerError)
		return nil, false
	}
	return scope.ResourceFilter(), true
}

func parseTraceID(s string) (pcommon.TraceID, error) {
	var id pcommon.TraceID
	if len(s) == 0 || len(s) > 32 {
		return id, fmt.Errorf("trace ID %q must be 1 to 32 hex characters", s)
	}
	s = strings.Repeat("0", 32-len(s)) + s
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("trace ID %q is not hex: %w", s, err)
	}
	return id, nil
}

func (a *API) lookup(w http.ResponseWriter, r *http.Request) (ptrace.Traces, bool) {
	id, err := parseTraceID(r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return ptrace.Traces{}, false
	}
	visible, ok := traceScope(w, r)
	if !ok {
		return ptrace.Traces{}, false
	}
	td, err := a.store.Trace(r.Context(), id)
	if err == nil && visible != nil {
		// Only the spans of the clusters the caller may see.
		td.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool { return !visible(rs.Resource().Attributes()) })
		if td.ResourceSpans().Len() == 0 {
			err = traces.ErrNotFound
		}
	}
	if errors.Is(err, traces.ErrNotFound) {
		http.Error(w, fmt.Sprintf("trace %s not found", r.PathValue("id")), http.StatusNotFound)
		return td, false
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return td, false
	}
	return td, true
}

// trace answers like Tempo's v1 endpoint: protobuf tempopb.Trace (wire
// compatible with OTLP TracesData) when asked, else JSON {"batches": [...]}.
func (a *API) trace(w http.ResponseWriter, r *http.Request) {
	td, ok := a.lookup(w, r)
	if !ok {
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "application/protobuf") {
		var m ptrace.ProtoMarshaler
		b, err := m.MarshalTraces(td)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/protobuf")
		_, _ = w.Write(b)
		return
	}
	var m ptrace.JSONMarshaler
	b, err := m.MarshalTraces(td)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if rest, ok := strings.CutPrefix(string(b), `{"resourceSpans":`); ok {
		_, _ = w.Write([]byte(`{"batches":` + rest))
		return
	}
	_, _ = w.Write([]byte(`{"batches":[]}`))
}

func (a *API) traceV2(w http.ResponseWriter, r *http.Request) {
	td, ok := a.lookup(w, r)
	if !ok {
		return
	}
	var m ptrace.JSONMarshaler
	b, err := m.MarshalTraces(td)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"trace":`))
	_, _ = w.Write(b)
	_, _ = w.Write([]byte(`}`))
}

// parseTags parses Tempo's logfmt `tags` parameter: key=value pairs.
func parseTags(s string) ([]traces.Condition, error) {
	var out []traces.Condition
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			break
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("bad tags %q: want key=value pairs", s)
		}
		k := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("bad tags: unterminated quote in value of %s", k)
			}
			v, s = s[1:end+1], s[end+2:]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			v, s = s[:end], s[end:]
		}
		if k == "service.name" {
			k = "resource.service.name"
		}
		out = append(out, traces.Condition{Tag: k, Value: v})
	}
	return out, nil
}

// parseTraceQL accepts `{}` or `{ cond && cond ... }` with cond `tag = value`.
func parseTraceQL(q string) ([]traces.Condition, error) {
	q = strings.TrimSpace(q)
	if !strings.HasPrefix(q, "{") || !strings.HasSuffix(q, "}") {
		return nil, fmt.Errorf("TraceQL %q: fleetgate's embedded store supports only { tag = value && ... }", q)
	}
	body := strings.TrimSpace(q[1 : len(q)-1])
	if body == "" {
		return nil, nil
	}
	var out []traces.Condition
	for _, part := range strings.Split(body, "&&") {
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !traceQLTag.MatchString(k) || !traceQLValue.MatchString(v) {
			return nil, fmt.Errorf("TraceQL condition %q: fleetgate's embedded store supports only tag = value joined by && (Tempo supports the full language)", strings.TrimSpace(part))
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		out = append(out, traces.Condition{Tag: k, Value: v})
	}
	return out, nil
}

// The subset of TraceQL the embedded store answers: a plain tag name and a
// quoted string or bare word; anything else (||, pipes, nested spansets,
// comparisons) is refused rather than matched literally.
var (
	traceQLTag   = regexp.MustCompile(`^[A-Za-z_.][A-Za-z0-9_.:/-]*$`)
	traceQLValue = regexp.MustCompile(`^("([^"\\]|\\.)*"|[A-Za-z0-9_.:/-]+)$`)
)

func (a *API) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var conds []traces.Condition
	var err error
	switch {
	case q.Get("q") != "":
		conds, err = parseTraceQL(q.Get("q"))
	case q.Get("tags") != "":
		conds, err = parseTags(q.Get("tags"))
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	limit := 20
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit <= 0 || limit > 1000 {
			http.Error(w, fmt.Sprintf("bad limit %q: want 1 to 1000", l), http.StatusBadRequest)
			return
		}
	}
	mint, maxt, ok := a.tagRange(w, r)
	if !ok {
		return
	}
	visible, ok := traceScope(w, r)
	if !ok {
		return
	}
	res, err := a.store.SearchVisible(r.Context(), mint, maxt, conds, limit, visible)
	if err != nil {
		tempoStoreError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"traces": res, "metrics": map[string]any{}})
}

// maxUnixSeconds bounds search times so that milliseconds do not overflow.
const maxUnixSeconds = 1 << 40

// tagNames returns the scope-qualified tags the caller of r may see: from
// the index for every cluster, else from the spans of its clusters in the
// request's time range (start/end in Unix seconds, default the last hour).
func (a *API) tagNames(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	visible, ok := traceScope(w, r)
	if !ok {
		return nil, false
	}
	if visible == nil {
		return a.store.Tags(), true
	}
	mint, maxt, ok := a.tagRange(w, r)
	if !ok {
		return nil, false
	}
	tags, err := a.store.TagsVisible(r.Context(), mint, maxt, visible)
	if err != nil {
		tempoStoreError(w, err)
		return nil, false
	}
	return tags, true
}

// tagValueList is tagNames for the values of one tag.
func (a *API) tagValueList(w http.ResponseWriter, r *http.Request, tag string) ([]string, bool) {
	visible, ok := traceScope(w, r)
	if !ok {
		return nil, false
	}
	if visible == nil {
		return a.store.TagValues(tag), true
	}
	mint, maxt, ok := a.tagRange(w, r)
	if !ok {
		return nil, false
	}
	vals, err := a.store.TagValuesVisible(r.Context(), mint, maxt, tag, visible)
	if err != nil {
		tempoStoreError(w, err)
		return nil, false
	}
	return vals, true
}

// tagRange reads start and end (Unix seconds; default the last hour) as ms.
func (a *API) tagRange(w http.ResponseWriter, r *http.Request) (int64, int64, bool) {
	end := a.now()
	start := end.Add(-time.Hour)
	q := r.URL.Query()
	for name, dst := range map[string]*time.Time{"start": &start, "end": &end} {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > maxUnixSeconds {
				http.Error(w, fmt.Sprintf("bad %s %q: want Unix seconds between 0 and %d", name, v, int64(maxUnixSeconds)), http.StatusBadRequest)
				return 0, 0, false
			}
			*dst = time.Unix(n, 0)
		}
	}
	if end.Before(start) {
		http.Error(w, fmt.Sprintf("end %d is before start %d", end.Unix(), start.Unix()), http.StatusBadRequest)
		return 0, 0, false
	}
	return start.UnixMilli(), end.UnixMilli(), true
}

func tempoStoreError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		status = http.StatusGatewayTimeout
	}
	http.Error(w, err.Error(), status)
}

func (a *API) tags(w http.ResponseWriter, r *http.Request) {
	all, ok := a.tagNames(w, r)
	if !ok {
		return
	}
	seen := map[string]struct{}{}
	for _, t := range all {
		_, k, _ := strings.Cut(t, ".")
		if t == "name" {
			continue
		}
		seen[k] = struct{}{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tagNames": slices.Sorted(maps.Keys(seen))})
}

func (a *API) tagsV2(w http.ResponseWriter, r *http.Request) {
	all, ok := a.tagNames(w, r)
	if !ok {
		return
	}
	scopes := map[string][]string{"resource": {}, "span": {}}
	for _, t := range all {
		if s, k, ok := strings.Cut(t, "."); ok {
			scopes[s] = append(scopes[s], k)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"scopes": []map[string]any{
		{"name": "resource", "tags": scopes["resource"]},
		{"name": "span", "tags": scopes["span"]},
		{"name": "intrinsic", "tags": []string{"name", "status"}},
	}})
}

func (a *API) tagValues(w http.ResponseWriter, r *http.Request) {
	vals, ok := a.tagValueList(w, r, r.PathValue("tag"))
	if !ok {
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tagValues": vals})
}

func (a *API) tagValuesV2(w http.ResponseWriter, r *http.Request) {
	vals, ok := a.tagValueList(w, r, r.PathValue("tag"))
	if !ok {
		return
	}
	if r.PathValue("tag") == "status" {
		vals = []string{"error", "ok", "unset"}
	}
	out := make([]map[string]string, 0, len(vals))
	for _, v := range vals {
		out = append(out, map[string]string{"type": "string", "value": v})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tagValues": out})
}
