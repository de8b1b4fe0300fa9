package promapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/fleetgate/fleetgate/access"
)

// CacheConfig is the results cache of range queries (query.results_cache).
type CacheConfig struct {
	// Disabled turns the cache off.
	Disabled bool `yaml:"disabled"`
	// MaxSizeBytes bounds the memory of the cache (default 128 MiB, at least 32 MiB).
	MaxSizeBytes int `yaml:"max_size_bytes"`
	// MaxFreshness: the most recent part of a range (default 10m) is never
	// cached, because late samples may still change it.
	MaxFreshness model.Duration `yaml:"max_freshness"`
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *CacheConfig) Validate() error {
	if c.MaxSizeBytes < 0 {
		return fmt.Errorf("max_size_bytes: must not be negative, got %d", c.MaxSizeBytes)
	}
	if c.MaxSizeBytes > 0 && c.MaxSizeBytes < 32<<20 {
		return fmt.Errorf("max_size_bytes: must be at least 33554432 (32 MiB, fastcache's minimum), got %d", c.MaxSizeBytes)
	}
	if c.MaxFreshness < 0 {
		return fmt.Errorf("max_freshness: must not be negative, got %s", c.MaxFreshness)
	}
	return nil
}

// cacheHeader says whether a query_range answer came from the results cache:
// hit (every day from the cache), miss (at least one day computed) or bypass
// (the request cannot be cached).
const cacheHeader = "X-Fleetgate-Cache"

const dayMs = 24 * 60 * 60 * 1000

// resultsCache splits a range query by UTC day, caches each day's matrix in
// fastcache, and answers from the cached days plus freshly computed ones.
type resultsCache struct {
	c         *fastcache.Cache
	engine    promql.QueryEngine
	queryable storage.Queryable
	parser    parser.Parser
	fresh     time.Duration
	now       func() time.Time
	logger    *slog.Logger
	requests  *prometheus.CounterVec
	days      *prometheus.CounterVec
}

func newResultsCache(cfg CacheConfig, engine promql.QueryEngine, q storage.Queryable, p parser.Parser, r prometheus.Registerer, logger *slog.Logger) (*resultsCache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Disabled || q == nil {
		return nil, nil
	}
	size := cfg.MaxSizeBytes
	if size == 0 {
		size = DefaultConfig().ResultsCache.MaxSizeBytes
	}
	fresh := time.Duration(cfg.MaxFreshness)
	if fresh == 0 {
		fresh = time.Duration(DefaultConfig().ResultsCache.MaxFreshness)
	}
	c := &resultsCache{
		c: fastcache.New(size), engine: engine, queryable: q, parser: p, fresh: fresh, now: time.Now, logger: logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_query_results_cache_requests_total",
			Help: "Range queries by results cache outcome (hit, miss, bypass).",
		}, []string{"result"}),
		days: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_query_results_cache_days_total",
			Help: "Day fragments of range queries by outcome (hit, miss, uncacheable).",
		}, []string{"result"}),
	}
	if r != nil {
		for _, col := range []prometheus.Collector{c.requests, c.days} {
			if err := r.Register(col); err != nil {
				return nil, fmt.Errorf("registering results cache metrics: %w", err)
			}
		}
	}
	return c, nil
}

var cacheableParams = map[string]bool{
	"query": true, "start": true, "end": true, "step": true, "timeout": true,
	"partial_response": true, "dedup": true, "replicaLabels[]": true, "replicaLabels": true,
}

// handler answers cacheable range queries and hands everything else
// (including every error and every answer with warnings) to next.
func (c *resultsCache) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plan, ok := c.plan(r)
		if !ok {
			c.requests.WithLabelValues("bypass").Inc()
			w.Header().Set(cacheHeader, "bypass")
			next.ServeHTTP(w, r)
			return
		}
		body, hit, ok := c.answer(r.Context(), plan)
		if !ok {
			c.requests.WithLabelValues("bypass").Inc()
			w.Header().Set(cacheHeader, "bypass")
			next.ServeHTTP(w, r)
			return
		}
		result := "miss"
		if hit {
			result = "hit"
		}
		c.requests.WithLabelValues(result).Inc()
		w.Header().Set(cacheHeader, result)
		w.Header().Set("Content-Type", v1.JSONCodec{}.ContentType().String())
		w.WriteHeader(http.StatusOK)
		if _, err := w.Write(body); err != nil {
			c.logger.Debug("writing cached range query answer", "err", err)
		}
	})
}

type rangePlan struct {
	query            string
	start, end, step int64 // ms
	timeout          time.Duration
	opts             string // request options that change the answer
}

// plan decides whether r can be answered from the cache: only plain,
// valid, step-aligned range queries whose answer does not depend on the
// range itself (no @ start()/end()).
func (c *resultsCache) plan(r *http.Request) (rangePlan, bool) {
	var p rangePlan
	for k := range r.Form {
		if !cacheableParams[k] {
			return p, false
		}
	}
	if r.Header.Get("X-Prometheus-Use-Start-Timestamps") != "" {
		return p, false
	}
	if acc := r.Header.Get("Accept"); acc != "" && !strings.Contains(acc, "json") && !strings.Contains(acc, "*/*") {
		return p, false
	}
	start, err := parseAPITime(r.Form.Get("start"))
	if err != nil {
		return p, false
	}
	end, err := parseAPITime(r.Form.Get("end"))
	if err != nil || end.Before(start) {
		return p, false
	}
	step, err := parseAPIDuration(r.Form.Get("step"))
	if err != nil || step <= 0 || step%time.Millisecond != 0 || end.Sub(start)/step > 11000 {
		return p, false
	}
	if start.UnixNano()%int64(time.Millisecond) != 0 || end.UnixNano()%int64(time.Millisecond) != 0 {
		return p, false
	}
	p.start, p.end, p.step = start.UnixMilli(), end.UnixMilli(), step.Milliseconds()
	if p.start%p.step != 0 {
		return p, false // not step-aligned: the days would not line up
	}
	if t := r.Form.Get("timeout"); t != "" {
		if p.timeout, err = parseAPIDuration(t); err != nil {
			return p, false
		}
	}
	p.query = r.Form.Get("query")
	expr, err := c.parser.ParseExpr(p.query)
	if err != nil || (expr.Type() != parser.ValueTypeVector && expr.Type() != parser.ValueTypeScalar) {
		return p, false
	}
	rangeDependent := false
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch e := n.(type) {
		case *parser.VectorSelector:
			rangeDependent = rangeDependent || e.StartOrEnd != 0
		case *parser.SubqueryExpr:
			rangeDependent = rangeDependent || e.StartOrEnd != 0
		}
		return nil
	})
	if rangeDependent {
		return p, false
	}
	// The reader's scope changes the answer: it is part of the key. Without
	// one the API answers (and fails closed) itself.
	scope, ok := access.ScopeFrom(r.Context())
	if !ok {
		return p, false
	}
	o, err := parseRequestOptions(r) // valid: withRequestOptions checked them
	if err != nil {
		return p, false
	}
	p.opts = fmt.Sprintf("pr=%s dedup=%s rl=%s scope=%q", boolStr(o.PartialResponse), boolStr(o.Dedup),
		strings.Join(o.ReplicaLabels, ","), scope.String())
	return p, true
}

func boolStr(b *bool) string {
	if b == nil {
		return "-"
	}
	return strconv.FormatBool(*b)
}

// answer computes the JSON answer from cached and fresh day fragments.
// ok is false when the answer must come from the API itself (an error or
// warnings).
func (c *resultsCache) answer(ctx context.Context, p rangePlan) (body []byte, hit, ok bool) {
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	cutoff := c.now().Add(-c.fresh).UnixMilli()
	hit = true
	var parts []promql.Matrix
	for t0 := p.start; t0 <= p.end; {
		dayEnd := (floorDiv(t0, dayMs) + 1) * dayMs
		fe := min(p.end, t0+((dayEnd-1-t0)/p.step)*p.step)
		key := p.key(t0, fe)
		cacheable := fe <= cutoff
		var m promql.Matrix
		if cacheable {
			if b := c.c.GetBig(nil, key); len(b) > 0 {
				if dm, err := decodeMatrix(b); err == nil {
					m = dm
					c.days.WithLabelValues("hit").Inc()
				} else {
					c.logger.Warn("undecodable results cache entry", "err", err)
				}
			}
		}
		if m == nil {
			hit = false
			b, dm, ok := c.compute(ctx, p, t0, fe)
			if !ok {
				return nil, false, false
			}
			m = dm
			if cacheable {
				c.c.SetBig(key, b)
				c.days.WithLabelValues("miss").Inc()
			} else {
				c.days.WithLabelValues("uncacheable").Inc()
			}
		}
		parts = append(parts, m)
		t0 = fe + p.step
	}
	merged := mergeMatrices(parts)
	body, err := v1.JSONCodec{}.Encode(&v1.Response{Status: "success", Data: &v1.QueryData{ResultType: parser.ValueTypeMatrix, Result: merged}})
	if err != nil {
		c.logger.Error("encoding cached range query answer", "err", err)
		return nil, false, false
	}
	return body, hit, true
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func (p rangePlan) key(from, to int64) []byte {
	h := sha256.New()
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(from))
	binary.BigEndian.PutUint64(b[8:], uint64(to))
	binary.BigEndian.PutUint64(b[16:], uint64(p.step))
	h.Write(b[:])
	h.Write([]byte(p.opts))
	h.Write([]byte{0})
	h.Write([]byte(p.query))
	return h.Sum(nil)
}

// compute evaluates one fragment; it returns the encoded and decoded matrix.
func (c *resultsCache) compute(ctx context.Context, p rangePlan, from, to int64) ([]byte, promql.Matrix, bool) {
	qry, err := c.engine.NewRangeQuery(ctx, c.queryable, promql.NewPrometheusQueryOpts(false, 0, nil), p.query,
		time.UnixMilli(from).UTC(), time.UnixMilli(to).UTC(), time.Duration(p.step)*time.Millisecond)
	if err != nil {
		return nil, nil, false
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil || len(res.Warnings) > 0 {
		return nil, nil, false // errors, partial answers and annotations: the API answers itself, uncached
	}
	m, ok := res.Value.(promql.Matrix)
	if !ok {
		return nil, nil, false
	}
	b, err := encodeMatrix(m)
	if err != nil {
		c.logger.Error("encoding results cache entry", "err", err)
		return nil, nil, false
	}
	dm, err := decodeMatrix(b) // a copy that outlives the query's pooled slices
	if err != nil {
		return nil, nil, false
	}
	return b, dm, true
}

// mergeMatrices concatenates day fragments series by series, sorted by
// labels the way the engine sorts a range query's answer.
func mergeMatrices(parts []promql.Matrix) promql.Matrix {
	if len(parts) == 1 {
		return parts[0]
	}
	idx := map[string]int{}
	out := promql.Matrix{}
	for _, m := range parts {
		for _, s := range m {
			k := s.Metric.String()
			i, ok := idx[k]
			if !ok {
				idx[k] = len(out)
				out = append(out, promql.Series{Metric: s.Metric})
				i = len(out) - 1
			}
			out[i].Floats = append(out[i].Floats, s.Floats...)
			out[i].Histograms = append(out[i].Histograms, s.Histograms...)
		}
	}
	sort.Sort(out)
	return out
}

type cachedSeries struct {
	Labels []labels.Label
	T      []int64
	F      []float64
	HT     []int64
	H      []*histogram.FloatHistogram
}

func encodeMatrix(m promql.Matrix) ([]byte, error) {
	cs := make([]cachedSeries, len(m))
	for i, s := range m {
		c := &cs[i]
		s.Metric.Range(func(l labels.Label) { c.Labels = append(c.Labels, l) })
		for _, f := range s.Floats {
			c.T = append(c.T, f.T)
			c.F = append(c.F, f.F)
		}
		for _, h := range s.Histograms {
			c.HT = append(c.HT, h.T)
			c.H = append(c.H, h.H)
		}
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(cs); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeMatrix(b []byte) (promql.Matrix, error) {
	var cs []cachedSeries
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&cs); err != nil {
		return nil, err
	}
	m := make(promql.Matrix, 0, len(cs))
	for _, c := range cs {
		if len(c.T) != len(c.F) || len(c.HT) != len(c.H) {
			return nil, errors.New("corrupt results cache entry")
		}
		s := promql.Series{Metric: labels.New(c.Labels...)}
		for i := range c.T {
			s.Floats = append(s.Floats, promql.FPoint{T: c.T[i], F: c.F[i]})
		}
		for i := range c.HT {
			s.Histograms = append(s.Histograms, promql.HPoint{T: c.HT[i], H: c.H[i]})
		}
		m = append(m, s)
	}
	return m, nil
}

// parseAPITime parses a time the way Prometheus's API does.
func parseAPITime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		sec, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(sec), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// parseAPIDuration parses a duration the way Prometheus's API does.
func parseAPIDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if math.IsNaN(ts) || ts >= float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}
