package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Query is one dashboard query: instant when Range is 0.
type Query struct {
	Name  string
	Expr  string
	Range time.Duration
	Step  time.Duration
}

// DashboardQueries are the queries a fleet overview dashboard runs, over
// the series RunRW generates.
func DashboardQueries() []Query {
	exprs := []struct{ name, expr string }{
		{"cpu_by_ns", `sum by (cluster, namespace) (rate(container_cpu_usage_seconds_total[5m]))`},
		{"mem_topk", `topk(10, sum by (cluster, namespace, pod) (container_memory_working_set_bytes))`},
		{"latency_p99", `histogram_quantile(0.99, sum by (le, cluster, namespace) (rate(http_request_duration_seconds_bucket[5m])))`},
		{"restarts", `sum by (cluster, namespace) (kube_pod_container_status_restarts_total)`},
		{"node_cpu", `avg by (cluster, mode) (rate(node_cpu_seconds_total[5m]))`},
	}
	var qs []Query
	for _, e := range exprs {
		qs = append(qs, Query{Name: e.name + "/instant", Expr: e.expr})
	}
	for _, r := range []struct {
		d, step time.Duration
		name    string
	}{{time.Hour, 15 * time.Second, "1h"}, {6 * time.Hour, time.Minute, "6h"}, {24 * time.Hour, 5 * time.Minute, "24h"}} {
		for _, e := range exprs {
			qs = append(qs, Query{Name: e.name + "/" + r.name, Expr: e.expr, Range: r.d, Step: r.step})
		}
	}
	return qs
}

// QConfig describes a query load.
type QConfig struct {
	BaseURL     string // e.g. http://127.0.0.1:9090
	Queries     []Query
	Concurrency int
	Duration    time.Duration // run the queries round-robin this long
	MinRuns     int           // and at least this many times each
	At          time.Time     // evaluation time (end of range queries)
	Timeout     time.Duration
}

// QResult has latencies per query and overall.
type QResult struct {
	All      []time.Duration
	ByQuery  map[string][]time.Duration
	Errors   int
	FirstErr string
	Empty    int // successful answers without any series
}

// Quantile over all queries.
func (r *QResult) Quantile(q float64) time.Duration { return quantile(r.All, q) }

func (r *QResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "queries=%d errors=%d empty=%d p50=%s p90=%s p99=%s\n", len(r.All), r.Errors, r.Empty,
		r.Quantile(0.5), r.Quantile(0.9), r.Quantile(0.99))
	names := make([]string, 0, len(r.ByQuery))
	for n := range r.ByQuery {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d := r.ByQuery[n]
		fmt.Fprintf(&b, "  %-24s n=%-4d p50=%-12s p90=%-12s p99=%s\n", n, len(d), quantile(d, 0.5), quantile(d, 0.9), quantile(d, 0.99))
	}
	if r.FirstErr != "" {
		fmt.Fprintf(&b, "first error: %s\n", r.FirstErr)
	}
	return b.String()
}

// RunQueries runs cfg's queries round-robin from Concurrency workers.
func RunQueries(ctx context.Context, cfg QConfig) (*QResult, error) {
	if cfg.Concurrency < 1 || len(cfg.Queries) == 0 {
		return nil, fmt.Errorf("concurrency and queries must be set")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.At.IsZero() {
		cfg.At = time.Now()
	}
	client := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}}
	res := &QResult{ByQuery: map[string][]time.Duration{}}
	var mu sync.Mutex
	next := 0
	deadline := time.Now().Add(cfg.Duration)
	take := func() (Query, bool) {
		mu.Lock()
		defer mu.Unlock()
		runs := next / len(cfg.Queries)
		if ctx.Err() != nil || (time.Now().After(deadline) && runs >= cfg.MinRuns) {
			return Query{}, false
		}
		q := cfg.Queries[next%len(cfg.Queries)]
		next++
		return q, true
	}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				q, ok := take()
				if !ok {
					return
				}
				lat, empty, err := runQuery(ctx, client, cfg.BaseURL, q, cfg.At)
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstErr == "" {
						res.FirstErr = q.Name + ": " + err.Error()
					}
				} else {
					res.All = append(res.All, lat)
					res.ByQuery[q.Name] = append(res.ByQuery[q.Name], lat)
					if empty {
						res.Empty++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res, nil
}

func runQuery(ctx context.Context, client *http.Client, base string, q Query, at time.Time) (time.Duration, bool, error) {
	v := url.Values{}
	v.Set("query", q.Expr)
	// VictoriaMetrics would answer repeated range queries from its rollup
	// cache; every system computes every answer here.
	v.Set("nocache", "1")
	path := "/api/v1/query"
	ts := func(t time.Time) string { return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64) }
	if q.Range > 0 {
		path = "/api/v1/query_range"
		v.Set("start", ts(at.Add(-q.Range)))
		v.Set("end", ts(at))
		v.Set("step", strconv.FormatFloat(q.Step.Seconds(), 'f', -1, 64))
	} else {
		v.Set("time", ts(at))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(v.Encode()))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(t0)
	if err != nil {
		return lat, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return lat, false, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, body)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return lat, false, fmt.Errorf("decoding answer: %w", err)
	}
	if r.Status != "success" {
		return lat, false, fmt.Errorf("status %q: %.200s", r.Status, body)
	}
	return lat, len(r.Data.Result) == 0, nil
}
