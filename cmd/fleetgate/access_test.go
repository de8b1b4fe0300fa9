package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/stretchr/testify/require"
)

// The four callers of the authorisation table.
var callers = []struct{ name, token string }{
	{"no credential", ""},
	{"wrong credential", wrongToken},
	{"reader eu-1", readerToken},
	{"admin", adminToken},
}

// authzCase is one well-formed request to a route and the status each
// caller gets (in the order of callers).
type authzCase struct {
	pattern     string // the registration it exercises
	method      string
	target      string
	contentType string
	body        string
	codes       [4]int
}

func remoteReadBody(t testing.TB) string {
	q, err := remote.ToQuery(0, time.Now().UnixMilli(), []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")}, nil)
	require.NoError(t, err)
	b, err := proto.Marshal(&prompb.ReadRequest{Queries: []*prompb.Query{q}})
	require.NoError(t, err)
	return string(snappy.Encode(nil, b))
}

// authzTable lists every registered route; TestAuthorizationTable fails
// when a route is missing from it.
func authzTable(t testing.TB) []authzCase {
	const (
		json  = "application/json"
		form  = "application/x-www-form-urlencoded"
		proto = "application/x-protobuf"
	)
	now := fmt.Sprint(time.Now().Unix())
	rng := "start=" + fmt.Sprint(time.Now().Add(-time.Hour).Unix()) + "&end=" + now
	ok, okAll := [4]int{401, 401, 200, 200}, [4]int{401, 401, 403, 200}
	admin := [4]int{401, 401, 403, 200}
	ingest := [4]int{401, 401, 401, 401} // reader and admin tokens are no cluster's
	cases := []authzCase{
		{pattern: "POST /api/v1/write", method: "POST", target: "/api/v1/write", contentType: proto, codes: ingest},
		{pattern: "POST /api/v1/push", method: "POST", target: "/api/v1/push", contentType: proto, codes: ingest},
		{pattern: "POST /loki/api/v1/push", method: "POST", target: "/loki/api/v1/push", contentType: json, body: `{"streams":[]}`, codes: ingest},
		{pattern: "POST /v1/metrics", method: "POST", target: "/v1/metrics", contentType: json, body: `{}`, codes: ingest},
		{pattern: "POST /v1/logs", method: "POST", target: "/v1/logs", contentType: json, body: `{}`, codes: ingest},
		{pattern: "POST /v1/traces", method: "POST", target: "/v1/traces", contentType: json, body: `{}`, codes: ingest},

		{pattern: "GET /-/healthy", method: "GET", target: "/-/healthy", codes: [4]int{200, 200, 200, 200}},
		{pattern: "GET /-/ready", method: "GET", target: "/-/ready", codes: [4]int{200, 200, 200, 200}},
		{pattern: "GET /metrics", method: "GET", target: "/metrics", codes: okAll},

		// Prometheus's API (the /api/v1/ catch-all) and fleetgate's own.
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/query?query=up", codes: ok},
		{pattern: "/api/v1/", method: "POST", target: "/api/v1/query", contentType: form, body: "query=up", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/query_exemplars?query=up&" + rng, codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/format_query?query=up", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/parse_query?query=up", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/labels", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/label/job/values", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/series?match[]=up", codes: ok},
		{pattern: "/api/v1/", method: "POST", target: "/api/v1/read", contentType: proto, body: remoteReadBody(t), codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/status/buildinfo", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/status/runtimeinfo", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/status/flags", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/status/config", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/status/walreplay", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/notifications", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/notifications/live", codes: [4]int{401, 401, 204, 204}},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/rules", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/alerts", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/targets", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/alertmanagers", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/scrape_pools", codes: ok},
		{pattern: "/api/v1/", method: "GET", target: "/api/v1/features", codes: ok},
		{pattern: "/api/v1/search/", method: "GET", target: "/api/v1/search/metric_names", codes: [4]int{401, 401, 404, 404}},
		{pattern: "/api/v1/admin/", method: "POST", target: "/api/v1/admin/tsdb/snapshot", codes: [4]int{401, 401, 404, 404}},
		{pattern: "GET /api/v1/query_range", method: "GET", target: "/api/v1/query_range?query=up&step=60&" + rng, codes: ok},
		{pattern: "POST /api/v1/query_range", method: "POST", target: "/api/v1/query_range", contentType: form, body: "query=up&step=60&" + rng, codes: ok},
		{pattern: "GET /api/v1/status/tsdb", method: "GET", target: "/api/v1/status/tsdb", codes: okAll},
		{pattern: "GET /api/v1/status/tsdb/blocks", method: "GET", target: "/api/v1/status/tsdb/blocks", codes: okAll},
		{pattern: "GET /api/v1/status/self_metrics", method: "GET", target: "/api/v1/status/self_metrics", codes: okAll},
		{pattern: "GET /api/v1/metadata", method: "GET", target: "/api/v1/metadata", codes: ok},
		{pattern: "POST /api/v1/metadata", method: "POST", target: "/api/v1/metadata", contentType: form, body: "limit=5", codes: ok},
		{pattern: "GET /api/v1/clusters", method: "GET", target: "/api/v1/clusters", codes: ok},
		{pattern: "GET /api/v1/sources", method: "GET", target: "/api/v1/sources", codes: ok},
		{pattern: "GET /api/v1/ha", method: "GET", target: "/api/v1/ha", codes: ok},

		// Loki and Tempo read APIs.
		{pattern: "GET /loki/api/v1/query_range", method: "GET", target: "/loki/api/v1/query_range?query=" + url.QueryEscape(`{app="x"}`), codes: ok},
		{pattern: "POST /loki/api/v1/query_range", method: "POST", target: "/loki/api/v1/query_range", contentType: form, body: "query=" + url.QueryEscape(`{app="x"}`), codes: ok},
		{pattern: "GET /loki/api/v1/query", method: "GET", target: "/loki/api/v1/query?query=" + url.QueryEscape(`{app="x"}`), codes: ok},
		{pattern: "POST /loki/api/v1/query", method: "POST", target: "/loki/api/v1/query", contentType: form, body: "query=" + url.QueryEscape(`{app="x"}`), codes: ok},
		{pattern: "GET /loki/api/v1/labels", method: "GET", target: "/loki/api/v1/labels", codes: ok},
		{pattern: "POST /loki/api/v1/labels", method: "POST", target: "/loki/api/v1/labels", contentType: form, body: "", codes: ok},
		{pattern: "GET /loki/api/v1/label/{name}/values", method: "GET", target: "/loki/api/v1/label/cluster/values", codes: ok},
		{pattern: "POST /loki/api/v1/label/{name}/values", method: "POST", target: "/loki/api/v1/label/cluster/values", codes: ok},
		{pattern: "GET /loki/api/v1/series", method: "GET", target: "/loki/api/v1/series?match[]=" + url.QueryEscape(`{app="x"}`), codes: ok},
		{pattern: "POST /loki/api/v1/series", method: "POST", target: "/loki/api/v1/series", contentType: form, body: "match[]=" + url.QueryEscape(`{app="x"}`), codes: ok},
		{pattern: "GET /loki/api/v1/status/buildinfo", method: "GET", target: "/loki/api/v1/status/buildinfo", codes: ok},
		{pattern: "GET /api/traces/{id}", method: "GET", target: "/api/traces/0102", codes: [4]int{401, 401, 404, 404}},
		{pattern: "GET /api/v2/traces/{id}", method: "GET", target: "/api/v2/traces/0102", codes: [4]int{401, 401, 404, 404}},
		{pattern: "GET /api/search", method: "GET", target: "/api/search?tags=name%3Dx", codes: ok},
		{pattern: "GET /api/search/tags", method: "GET", target: "/api/search/tags", codes: ok},
		{pattern: "GET /api/v2/search/tags", method: "GET", target: "/api/v2/search/tags", codes: ok},
		{pattern: "GET /api/search/tag/{tag}/values", method: "GET", target: "/api/search/tag/name/values", codes: ok},
		{pattern: "GET /api/v2/search/tag/{tag}/values", method: "GET", target: "/api/v2/search/tag/name/values", codes: ok},
		{pattern: "GET /api/echo", method: "GET", target: "/api/echo", codes: ok},

		// Health: scoped (us-1 is not known to the eu-1 reader).
		{pattern: "GET /api/v1/clusters/{name}/health", method: "GET", target: "/api/v1/clusters/eu-1/health", codes: ok},
		{pattern: "GET /api/v1/clusters/{name}/health", method: "GET", target: "/api/v1/clusters/us-1/health", codes: [4]int{401, 401, 404, 200}},
		{pattern: "GET /api/v1/health", method: "GET", target: "/api/v1/health", codes: ok},
		{pattern: "GET /health/clusters/{name}", method: "GET", target: "/health/clusters/eu-1", codes: [4]int{401, 401, 503, 503}},
		{pattern: "GET /health/clusters/{name}", method: "GET", target: "/health/clusters/us-1", codes: [4]int{401, 401, 404, 503}},
		{pattern: "HEAD /health/clusters/{name}", method: "HEAD", target: "/health/clusters/eu-1", codes: [4]int{401, 401, 503, 503}},

		// Failover state spans clusters; changes are the admin's.
		{pattern: "GET /api/v1/failover/events", method: "GET", target: "/api/v1/failover/events", codes: okAll},
		{pattern: "GET /api/v1/failover/groups", method: "GET", target: "/api/v1/failover/groups", codes: okAll},
		{pattern: "GET /api/v1/failover/drill", method: "GET", target: "/api/v1/failover/drill?cluster=eu-1", codes: okAll},
		{pattern: "POST /api/v1/failover/drill", method: "POST", target: "/api/v1/failover/drill?cluster=eu-1", codes: admin},
		{pattern: "POST /api/v1/failover/groups/{name}/freeze", method: "POST", target: "/api/v1/failover/groups/web/freeze", contentType: json, body: `{"reason":"maintenance","duration":"1h"}`, codes: admin},
		{pattern: "DELETE /api/v1/failover/groups/{name}/freeze", method: "DELETE", target: "/api/v1/failover/groups/web/freeze", codes: admin},
		{pattern: "POST /api/v1/failover/groups/{name}/override", method: "POST", target: "/api/v1/failover/groups/web/override", contentType: json, body: `{"clusters":["us-1"],"reason":"drain eu-1"}`, codes: admin},
		{pattern: "DELETE /api/v1/failover/groups/{name}/override", method: "DELETE", target: "/api/v1/failover/groups/web/override", codes: admin},
		{pattern: "POST /api/v1/ha/{cluster}/pin", method: "POST", target: "/api/v1/ha/eu-1/pin", contentType: json, body: `{"replica":"r1","force":true}`, codes: admin},
	}
	return cases
}

// TestAuthorizationTable: every route × {no credential, wrong credential,
// reader scoped to eu-1, admin} → the expected status; the table covers
// every registered route.
func TestAuthorizationTable(t *testing.T) {
	a := newTestApp(t, "")
	now := time.Now()
	a.remoteWrite(t, eu1Token, []time.Time{now}, "up", "job", "a")
	a.remoteWrite(t, us1Token, []time.Time{now}, "up", "job", "a")
	cases := authzTable(t)
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.pattern] = true
	}
	for _, r := range a.routes.list {
		require.Truef(t, covered[r.pattern], "route %q (%s) is missing from the authorisation table", r.pattern, r.class)
	}
	for _, tc := range cases {
		for i, c := range callers {
			var b []byte
			if tc.body != "" || tc.contentType != "" {
				b = []byte(tc.body)
			}
			w := a.do(t, tc.method, tc.target, c.token, tc.contentType, b)
			require.Equalf(t, tc.codes[i], w.Code, "%s %s as %s: %s", tc.method, tc.target, c.name, body(w))
			if w.Code == 401 && !strings.HasPrefix(tc.target, "/v1/") && !strings.Contains(tc.target, "push") && !strings.Contains(tc.target, "write") {
				require.Equal(t, `Bearer realm="fleetgate"`, w.Header().Get("WWW-Authenticate"), "%s %s", tc.method, tc.target)
				var e struct{ Status, ErrorType, Error string }
				require.NoError(t, json.Unmarshal(w.Body.Bytes(), &e), body(w))
				require.Equal(t, "error", e.Status)
				require.Equal(t, "unauthorized", e.ErrorType)
			}
		}
	}
}

// TestScopedReaderEndToEnd: with eu-1 and us-1 data present, the reader
// scoped to eu-1 sees only eu-1 through PromQL, the registry and health;
// the admin sees both.
func TestScopedReaderEndToEnd(t *testing.T) {
	a := newTestApp(t, "")
	now := time.Now()
	for _, tok := range []string{eu1Token, us1Token} {
		a.remoteWrite(t, tok, []time.Time{now.Add(-time.Minute), now}, "up", "job", "node")
	}
	clusters := func(tok, target string, key string) []string {
		w := a.do(t, "GET", target, tok, "", nil)
		require.Equal(t, 200, w.Code, body(w))
		var out []string
		var env struct{ Data json.RawMessage }
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &env))
		var vec struct {
			Result []struct{ Metric map[string]string }
		}
		if json.Unmarshal(env.Data, &vec) == nil && vec.Result != nil {
			for _, r := range vec.Result {
				out = append(out, r.Metric["cluster"])
			}
		} else {
			var list []map[string]any
			require.NoError(t, json.Unmarshal(env.Data, &list), string(env.Data))
			for _, m := range list {
				out = append(out, fmt.Sprint(m[key]))
			}
		}
		slices.Sort(out)
		return out
	}
	q := "/api/v1/query?query=" + url.QueryEscape(`count by (cluster) ({__name__=~".+"})`)
	require.Equal(t, []string{"eu-1", "us-1"}, clusters(adminToken, q, ""))
	require.Equal(t, []string{"eu-1"}, clusters(readerToken, q, ""))
	require.Equal(t, []string{"eu-1", "eu-2", "us-1"}, clusters(adminToken, "/api/v1/clusters", "name"))
	require.Equal(t, []string{"eu-1"}, clusters(readerToken, "/api/v1/clusters", "name"))
	w := a.do(t, "GET", "/api/v1/label/cluster/values", readerToken, "", nil)
	require.Equal(t, 200, w.Code)
	require.JSONEq(t, `{"status":"success","data":["eu-1"]}`, body(w))
}

// TestCrossSiteOverride: the cross-site request of the issue — a
// text/plain POST without credentials — is refused and changes nothing;
// with the admin's token a text/plain body is still a 415.
func TestCrossSiteOverride(t *testing.T) {
	a := newTestApp(t, "")
	groups := func() string {
		w := a.do(t, "GET", "/api/v1/failover/groups", adminToken, "", nil)
		require.Equal(t, 200, w.Code)
		return body(w)
	}
	before := groups()
	payload := []byte(`{"clusters":["us-1"],"reason":"csrf"}`)
	w := a.do(t, "POST", "/api/v1/failover/groups/web/override", "", "text/plain", payload)
	require.Equal(t, 401, w.Code, body(w))
	w = a.do(t, "POST", "/api/v1/failover/groups/web/override", adminToken, "text/plain", payload)
	require.Equal(t, 415, w.Code, body(w))
	w = a.do(t, "POST", "/api/v1/failover/groups/web/freeze", readerToken, "application/json", []byte(`{"duration":"8760h"}`))
	require.Equal(t, 403, w.Code, body(w))
	require.Equal(t, before, groups(), "nothing changed")
	w = a.do(t, "GET", "/api/v1/failover/events", adminToken, "", nil)
	require.JSONEq(t, `{"status":"success","data":[]}`, body(w))
}

// TestCrossSiteEmptyBody: a cross-site page can make a browser POST with
// no body (an empty text/plain form, fetch in no-cors mode) and the
// credentials the browser holds (a client certificate, basic auth); the
// JSON type check never sees such a request, so admin routes refuse every
// cross-origin browser request (the bearer token here stands in for the
// ambient credential). Non-browser clients send no such headers.
func TestCrossSiteEmptyBody(t *testing.T) {
	a := newTestApp(t, "")
	post := func(contentType string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "http://fleetgate.test/api/v1/failover/groups/web/freeze", http.NoBody)
		r.Header.Set("Authorization", "Bearer "+adminToken)
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		a.routes.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct {
		name, contentType string
		hdr               []string
	}{
		{"empty text/plain form", "text/plain", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}},
		{"no-cors fetch", "", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}},
		{"older browser: Origin only", "text/plain", []string{"Origin", "https://evil.example"}},
		{"same site, other origin", "", []string{"Sec-Fetch-Site", "same-site", "Origin", "https://grafana.fleetgate.test"}},
	} {
		w := post(tc.contentType, tc.hdr...)
		require.Equal(t, http.StatusForbidden, w.Code, "%s: %s", tc.name, body(w))
		require.Contains(t, body(w), "cross-origin", tc.name)
	}
	w := a.do(t, "GET", "/api/v1/failover/events", adminToken, "", nil)
	require.JSONEq(t, `{"status":"success","data":[]}`, body(w), "nothing changed")
	// The same origin (a UI served by fleetgate) and non-browser clients pass.
	w = post("", "Sec-Fetch-Site", "same-origin", "Origin", "http://fleetgate.test")
	require.Equal(t, 200, w.Code, body(w))
	w = post("")
	require.Equal(t, 200, w.Code, body(w))
}

// TestAdminBodies: the limits of admin request bodies.
func TestAdminBodies(t *testing.T) {
	a := newTestApp(t, "")
	freeze := "/api/v1/failover/groups/web/freeze"
	for _, tc := range []struct {
		name, contentType, body string
		code                    int
		want                    string
	}{
		{"too large", "application/json", `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "more than 65536 bytes"},
		{"reason too long", "application/json", `{"reason":"` + strings.Repeat("x", 1025) + `"}`, 400, "reason: 1025 bytes, at most 1024"},
		{"unknown field", "application/json", `{"reason":"x","untill":"1h"}`, 400, `unknown field \"untill\"`},
		{"trailing data", "application/json", `{"reason":"x"} {"reason":"y"}`, 400, "data after the JSON object"},
		{"trailing garbage", "application/json", `{"reason":"x"}garbage`, 400, "data after the JSON object"},
		{"not json", "application/json", `reason=x`, 400, "request body"},
		{"form", "application/x-www-form-urlencoded", `reason=x`, 415, "must be application/json"},
		{"no content type", "", `{"reason":"x"}`, 415, "must be application/json"},
		{"unknown cluster", "application/json", `{"clusters":["eu-1","mars"]}`, 400, `clusters[1]: unknown cluster \"mars\"`},
		{"json with charset", "application/json; charset=utf-8", `{"reason":"ok"}`, 200, `"actor":"oncall"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := a.do(t, "POST", freeze, adminToken, tc.contentType, []byte(tc.body))
			require.Equal(t, tc.code, w.Code, body(w))
			require.Contains(t, body(w), tc.want)
		})
	}
	// A DELETE takes no body; an empty one is fine.
	w := a.do(t, "DELETE", freeze, adminToken, "text/plain", []byte("x"))
	require.Equal(t, 415, w.Code, body(w))
	w = a.do(t, "DELETE", freeze, adminToken, "", nil)
	require.Equal(t, 200, w.Code, body(w))
	require.Contains(t, body(w), `"actor":"oncall"`)
}

// TestHAPin: the pin takes JSON; a replica never seen is refused unless
// forced (it would silently drop every sample of the cluster).
func TestHAPin(t *testing.T) {
	a := newTestApp(t, "")
	a.remoteWrite(t, eu1Token, []time.Time{time.Now()}, "up", "__replica__", "r1")
	pin := "/api/v1/ha/eu-1/pin"
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"made-up replica", `{"replica":"made-up"}`, 400, `replica: \"made-up\" was never seen for cluster \"eu-1\"`},
		{"no replica", `{}`, 400, "replica: must be set"},
		{"both", `{"replica":"r1","unpin":true}`, 400, "not both"},
		{"form fields are gone", ``, 400, "replica: must be set"},
		{"seen replica", `{"replica":"r1"}`, 200, `"pinned":true`},
		{"forced", `{"replica":"r9","force":true}`, 200, `"elected":"r9"`},
		{"unpin", `{"unpin":true}`, 200, `"pinned":false`},
		{"unknown cluster", `{"replica":"r1"}`, 404, "mars"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := pin
			if tc.name == "unknown cluster" {
				target = "/api/v1/ha/mars/pin"
			}
			w := a.do(t, "POST", target, adminToken, "application/json", []byte(tc.body))
			require.Equal(t, tc.code, w.Code, body(w))
			require.Contains(t, body(w), tc.want)
		})
	}
	w := a.do(t, "POST", pin, adminToken, "application/x-www-form-urlencoded", []byte("replica=r1"))
	require.Equal(t, 415, w.Code, body(w))
}

var _ = http.MethodGet
