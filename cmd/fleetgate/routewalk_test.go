package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
)

// v1Paths are the endpoints behind the /api/v1/ catch-all (Prometheus's
// own web/api/v1 router).
var v1Paths = []string{
	"query", "query_range", "query_exemplars", "format_query", "parse_query", "labels", "label/job/values",
	"series", "read", "write", "otlp/v1/metrics", "metadata", "scrape_pools", "scrape_pools/config", "targets",
	"targets/metadata", "targets/relabel_steps", "alertmanagers", "status/config", "status/runtimeinfo",
	"status/buildinfo", "status/flags", "status/tsdb", "status/tsdb/blocks", "status/self_metrics",
	"status/walreplay", "features", "notifications", "notifications/live", "alerts", "rules",
	"search/metric_names", "search/label_names", "search/label_values", "openapi.yaml",
	"admin/tsdb/delete_series", "admin/tsdb/clean_tombstones", "admin/tsdb/snapshot", "no/such/endpoint",
}

type walkTarget struct{ method, path string }

// walkTargets turns a registration pattern into concrete requests.
func walkTargets(pattern string) []walkTarget {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "", pattern
	}
	var paths []string
	if path == "/api/v1/" {
		for _, p := range v1Paths {
			paths = append(paths, path+p)
		}
	} else {
		name := "eu-1"
		switch {
		case strings.Contains(path, "/failover/groups/"):
			name = "web"
		case strings.HasPrefix(path, "/loki/"):
			name = "job"
		}
		r := strings.NewReplacer("{name}", name, "{cluster}", "eu-1", "{id}", "0102ab", "{tag}", "name")
		paths = append(paths, r.Replace(path))
	}
	methods := []string{method}
	if method == "" {
		methods = []string{"GET", "POST"}
	}
	var out []walkTarget
	for _, m := range methods {
		for _, p := range paths {
			out = append(out, walkTarget{m, p})
		}
	}
	return out
}

// contract5xx are 5xx answers that are a route's contract, not a failure:
// the DNS health check says 503 for a cluster that is down or unknown.
var contract5xx = map[string]int{
	"GET /health/clusters/{name}":  503,
	"HEAD /health/clusters/{name}": 503,
}

// malformedParams are bad values of every parameter the routes read.
const malformedParams = "query=sum(&match[]={&match={&start=abc&end=-1e999&step=-1&time=never&limit=-5&limit_per_metric=x" +
	"&after=x&cluster=%00&group=%00&tags=%3D%3D&q=%7B%7C%7C%7D&direction=up&dedup=maybe&partial_response=2" +
	"&replicaLabels[]=1bad&timeout=forever&metric=%00&spss=1"

// TestRouteWalk walks every registered route with {empty body, malformed
// body, malformed parameters} × {no credential, wrong credential, reader
// scoped to eu-1, admin}: nothing panics (the request is served in
// process, so a panic fails the test) and nothing answers 5xx.
func TestRouteWalk(t *testing.T) {
	a := newTestApp(t, "")
	a.remoteWrite(t, eu1Token, []time.Time{time.Now()}, "up", "job", "a")
	variants := []struct {
		name, query, contentType, body string
	}{
		{"empty body", "", "application/json", ""},
		{"malformed json", "", "application/json", `{"reason": 12, "clusters": [`},
		{"malformed protobuf", "", "application/x-protobuf", "\xff\x00garbage\x01"},
		{"malformed form", "", "application/x-www-form-urlencoded", "query=%zz&start=%"},
		{"malformed params", malformedParams, "", ""},
		{"malformed params and body", malformedParams, "text/plain", "\x00\x01"},
	}
	seen := 0
	for _, r := range a.routes.list {
		for _, tg := range walkTargets(r.pattern) {
			for _, v := range variants {
				target := tg.path
				if v.query != "" {
					target += "?" + v.query
				}
				for _, c := range callers {
					var b []byte
					if v.body != "" || v.contentType != "" {
						b = []byte(v.body)
					}
					w := a.do(t, tg.method, target, c.token, v.contentType, b)
					if w.Code == contract5xx[r.pattern] {
						continue
					}
					require.Lessf(t, w.Code, 500, "%s %s (%s) as %s: %d %s", tg.method, target, v.name, c.name, w.Code, body(w))
					seen++
				}
			}
		}
	}
	require.Greater(t, seen, 1000)
}

// TestTrickledBodyIsCutOff: a client sending a body 1 byte at a time is
// cut off once the route's body read time has passed, on a real listener.
func TestTrickledBodyIsCutOff(t *testing.T) {
	a := newTestApp(t, "")
	a.routes.bodyBase = 500 * time.Millisecond
	f, err := parseFlags(nil)
	require.NoError(t, err)
	l, err := listen(f, "127.0.0.1:0", a.routes, time.Minute, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	go func() { _ = l.Serve() }()
	t.Cleanup(func() { _ = l.srv.Close() })
	require.Equal(t, readHeaderTimeout, l.srv.ReadHeaderTimeout)
	require.Equal(t, idleTimeout, l.srv.IdleTimeout)

	conn, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	const size = 400
	_, err = fmt.Fprintf(conn, "POST /api/v1/failover/groups/web/freeze HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{", adminToken, size)
	require.NoError(t, err)
	var sent atomic.Int64
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for range size - 1 {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	defer close(stop)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(b), "timeout")
	require.Less(t, sent.Load(), int64(size-1), "answered before the body was complete")
}

// TestPublicHealthChecks: with auth.public_health_checks a health-check
// route answers without a credential (seeing every cluster); without it the
// route is a read route.
func TestPublicHealthChecks(t *testing.T) {
	no := false
	for _, public := range []bool{false, true} {
		auth, err := access.New(access.Config{AnonymousRead: &no, PublicHealthChecks: public}, access.Options{})
		require.NoError(t, err)
		rt := newRoutes(auth, 1<<20)
		rt.on(classHealthCheck).HandleFunc("GET /health/clusters/{name}", func(w http.ResponseWriter, r *http.Request) {
			s, _ := access.ScopeFrom(r.Context())
			_, _ = io.WriteString(w, s.String())
		})
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/health/clusters/eu-1", nil))
		if public {
			require.Equal(t, 200, w.Code)
			require.Equal(t, "*", w.Body.String())
		} else {
			require.Equal(t, 401, w.Code)
		}
	}
}
