// Package lokiapi serves the read side of Loki's HTTP API (what Grafana's
// Loki datasource calls) over the embedded log store, with the subset of
// LogQL in logql.go. Every stream selector carries the reader's cluster
// matcher (scoped.go).
package lokiapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// API serves the read side of Loki's HTTP API over the embedded log store.
// It is bounded and simple; Loki is the scale-out path.
type API struct {
	store  LogStore
	parser parser.Parser
	now    func() time.Time
}

// New builds the API over a log store.
func New(st LogStore) *API {
	return &API{store: st, parser: parser.NewParser(parser.Options{}), now: time.Now}
}

// maxLokiPoints bounds the steps of a range metric query, like Prometheus's 11000.
const maxLokiPoints = 11000

// maxLokiLimit bounds the lines of one log query.
const maxLokiLimit = 10000

// Register mounts the endpoints on mux (GET and POST).
func (a *API) Register(mux httpapi.Mux) {
	for _, m := range []string{"GET", "POST"} {
		mux.HandleFunc(m+" /loki/api/v1/query_range", a.queryRange)
		mux.HandleFunc(m+" /loki/api/v1/query", a.query)
		mux.HandleFunc(m+" /loki/api/v1/labels", a.labels)
		mux.HandleFunc(m+" /loki/api/v1/label/{name}/values", a.labelValues)
		mux.HandleFunc(m+" /loki/api/v1/series", a.series)
	}
	mux.HandleFunc("GET /loki/api/v1/status/buildinfo", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"version": "fleetgate-embedded", "revision": "", "branch": ""})
	})
}

func lokiError(w http.ResponseWriter, status int, err error) {
	http.Error(w, err.Error(), status)
}

// parseLokiTime accepts RFC3339, float seconds, or integer seconds/ms/ns (by magnitude).
func parseLokiTime(s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if strings.ContainsAny(s, "T:") {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
		}
		return t, nil
	}
	if strings.Contains(s, ".") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: want RFC3339, Unix seconds or nanoseconds", s)
	}
	switch {
	case n < 1e11:
		return time.Unix(n, 0), nil
	case n < 1e14:
		return time.UnixMilli(n), nil
	}
	return time.Unix(0, n), nil
}

func parseLokiStep(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f <= 0 || f > 1e9 {
			return 0, fmt.Errorf("bad step %q: must be positive", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := model.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad step %q: want a duration or seconds", s)
	}
	return time.Duration(d), nil
}

type lokiParams struct {
	q          string
	start, end time.Time
	limit      int
	backward   bool
	step       time.Duration
	logExpr    *logExpr
	metric     metricExpr
}

func (a *API) params(r *http.Request, instant bool) (*lokiParams, error) {
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("bad form: %w", err)
	}
	p := &lokiParams{q: r.Form.Get("query"), limit: 100, backward: true}
	if p.q == "" {
		return nil, errors.New("missing parameter: query")
	}
	now := a.now()
	var err error
	if instant {
		if p.end, err = parseLokiTime(r.Form.Get("time"), now); err != nil {
			return nil, err
		}
		p.start = p.end
	} else {
		if p.end, err = parseLokiTime(r.Form.Get("end"), now); err != nil {
			return nil, err
		}
		if p.start, err = parseLokiTime(r.Form.Get("start"), p.end.Add(-time.Hour)); err != nil {
			return nil, err
		}
		if p.end.Before(p.start) {
			return nil, errors.New("end timestamp must not be before start time")
		}
		if p.step, err = parseLokiStep(r.Form.Get("step")); err != nil {
			return nil, err
		}
		if p.step == 0 {
			p.step = max(time.Duration(math.Floor(p.end.Sub(p.start).Seconds()/250))*time.Second, time.Second)
		}
		if int64(p.end.Sub(p.start)/p.step) > maxLokiPoints {
			return nil, fmt.Errorf("exceeded maximum resolution of %d points per time series; increase step", maxLokiPoints)
		}
	}
	if l := r.Form.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad limit %q: must be a positive integer", l)
		}
		if n > maxLokiLimit {
			return nil, fmt.Errorf("limit %d is more than the embedded store's maximum of %d lines", n, maxLokiLimit)
		}
		p.limit = n
	}
	switch d := strings.ToLower(r.Form.Get("direction")); d {
	case "", "backward":
	case "forward":
		p.backward = false
	default:
		return nil, fmt.Errorf("bad direction %q: want forward or backward", d)
	}
	if p.logExpr, p.metric, err = parseLogQL(p.q, a.parser); err != nil {
		return nil, err
	}
	return p, nil
}

func (a *API) queryRange(w http.ResponseWriter, r *http.Request) { a.run(w, r, false) }
func (a *API) query(w http.ResponseWriter, r *http.Request)      { a.run(w, r, true) }

type lokiStream struct {
	Stream map[string]string `json:"stream"`
	Values [][]any           `json:"values"`
}

type lokiSeries struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values,omitempty"`
	Value  *[2]any           `json:"value,omitempty"`
}

func promPoint(p point) [2]any {
	return [2]any{float64(p.t) / 1e9, strconv.FormatFloat(p.v, 'f', -1, 64)}
}

func (a *API) run(w http.ResponseWriter, r *http.Request, instant bool) {
	p, err := a.params(r, instant)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	store, ok := a.logStore(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	var data map[string]any
	if p.logExpr != nil {
		mint, maxt := p.start.UnixNano(), p.end.UnixNano()
		if instant {
			// An instant log query looks back one hour, as Loki's default range does.
			mint = p.end.Add(-time.Hour).UnixNano()
		} else if maxt > mint {
			maxt-- // end is exclusive for log queries
		}
		entries, err := selectLogs(ctx, store, p.logExpr, mint, maxt, p.limit, p.backward)
		if err != nil {
			a.fail(w, err)
			return
		}
		var order []string
		byStream := map[string]*lokiStream{}
		for _, e := range entries {
			s := byStream[e.lstr]
			if s == nil {
				s = &lokiStream{Stream: e.ls.Map(), Values: [][]any{}}
				byStream[e.lstr] = s
				order = append(order, e.lstr)
			}
			v := []any{strconv.FormatInt(e.t, 10), e.line}
			if len(e.md) > 0 {
				md := make(map[string]string, len(e.md))
				for _, l := range e.md {
					md[l.Name] = l.Value
				}
				v = append(v, md)
			}
			s.Values = append(s.Values, v)
		}
		res := make([]*lokiStream, 0, len(order))
		for _, k := range order {
			res = append(res, byStream[k])
		}
		data = map[string]any{"resultType": "streams", "result": res, "stats": map[string]any{}}
	} else {
		var steps []int64
		if instant {
			steps = []int64{p.end.UnixNano()}
		} else {
			for t := p.start; !t.After(p.end); t = t.Add(p.step) {
				steps = append(steps, t.UnixNano())
			}
		}
		series, err := evalMetric(ctx, store, p.metric, steps)
		if err != nil {
			a.fail(w, err)
			return
		}
		res := make([]lokiSeries, 0, len(series))
		for _, s := range series {
			ls := lokiSeries{Metric: s.ls.Map()}
			if instant {
				v := promPoint(s.pts[0])
				ls.Value = &v
			} else {
				for _, pt := range s.pts {
					ls.Values = append(ls.Values, promPoint(pt))
				}
			}
			res = append(res, ls)
		}
		rt := "matrix"
		if instant {
			rt = "vector"
		}
		data = map[string]any{"resultType": rt, "result": res, "stats": map[string]any{}}
	}
	httpapi.WriteSuccess(w, data)
}

func (a *API) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errQueryTooLarge):
		lokiError(w, http.StatusBadRequest, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		lokiError(w, http.StatusServiceUnavailable, fmt.Errorf("query cancelled or timed out: %w", err))
	default:
		lokiError(w, http.StatusInternalServerError, err)
	}
}

// timeRange reads start/end for the metadata endpoints (default: last 6h, as Loki).
func (a *API) timeRange(r *http.Request) (int64, int64, error) {
	if err := r.ParseForm(); err != nil {
		return 0, 0, fmt.Errorf("bad form: %w", err)
	}
	end, err := parseLokiTime(r.Form.Get("end"), a.now())
	if err != nil {
		return 0, 0, err
	}
	start, err := parseLokiTime(r.Form.Get("start"), end.Add(-6*time.Hour))
	if err != nil {
		return 0, 0, err
	}
	if end.Before(start) {
		return 0, 0, errors.New("end timestamp must not be before start time")
	}
	return start.UnixNano(), end.UnixNano(), nil
}

func (a *API) matcherSets(r *http.Request) ([][]*labels.Matcher, error) {
	var sets [][]*labels.Matcher
	qs := append(r.Form["match[]"], r.Form["match"]...)
	if q := r.Form.Get("query"); q != "" {
		qs = append(qs, q)
	}
	for _, m := range qs {
		le, _, err := parseLogQL(m, a.parser)
		if err != nil {
			return nil, err
		}
		if le == nil {
			return nil, fmt.Errorf("%s: want a stream selector, got a metric query", m)
		}
		sets = append(sets, le.matchers)
	}
	return sets, nil
}

func (a *API) labels(w http.ResponseWriter, r *http.Request) {
	mint, maxt, err := a.timeRange(r)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	sets, err := a.matcherSets(r)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	store, ok := a.logStore(w, r)
	if !ok {
		return
	}
	seen := map[string]struct{}{}
	for _, ls := range store.Series(mint, maxt, sets) {
		ls.Range(func(l labels.Label) { seen[l.Name] = struct{}{} })
	}
	httpapi.WriteSuccess(w, slices.Sorted(maps.Keys(seen)))
}

func (a *API) labelValues(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	mint, maxt, err := a.timeRange(r)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	sets, err := a.matcherSets(r)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	store, ok := a.logStore(w, r)
	if !ok {
		return
	}
	seen := map[string]struct{}{}
	for _, ls := range store.Series(mint, maxt, sets) {
		if v := ls.Get(name); v != "" {
			seen[v] = struct{}{}
		}
	}
	httpapi.WriteSuccess(w, slices.Sorted(maps.Keys(seen)))
}

func (a *API) series(w http.ResponseWriter, r *http.Request) {
	mint, maxt, err := a.timeRange(r)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	sets, err := a.matcherSets(r)
	if err != nil {
		lokiError(w, http.StatusBadRequest, err)
		return
	}
	store, ok := a.logStore(w, r)
	if !ok {
		return
	}
	if len(sets) == 0 {
		lokiError(w, http.StatusBadRequest, errors.New("missing parameter: match[]"))
		return
	}
	out := []map[string]string{}
	for _, ls := range store.Series(mint, maxt, sets) {
		out = append(out, ls.Map())
	}
	httpapi.WriteSuccess(w, out)
}
