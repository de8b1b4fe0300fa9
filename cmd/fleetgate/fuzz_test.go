package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzAdminBody: no admin request body gets a 5xx, a panic or anything
// but the documented answers.
func FuzzAdminBody(f *testing.F) {
	a := newTestApp(f, "")
	for _, s := range []string{
		`{"reason":"maintenance","duration":"10m"}`, `{"clusters":["us-1"]}`, `{"replica":"r1","force":true}`,
		`{"unpin":true}`, `{"reason":"x"} {}`, `{"reason":12}`, `[]`, `null`, `{"clusters":["mars"]}`, `{"duration":"-1s"}`,
		`{"cluster":"eu-1"}`, "",
	} {
		f.Add(s, "application/json")
	}
	f.Add("reason=x", "text/plain")
	targets := []string{
		"POST /api/v1/failover/groups/web/freeze", "POST /api/v1/failover/groups/web/override",
		"DELETE /api/v1/failover/groups/web/override", "POST /api/v1/ha/eu-1/pin", "POST /api/v1/failover/drill",
	}
	allowed := map[int]bool{200: true, 400: true, 404: true, 413: true, 415: true}
	f.Fuzz(func(t *testing.T, body, contentType string) {
		for _, tg := range targets {
			method, path, _ := strings.Cut(tg, " ")
			w := a.do(t, method, path, adminToken, contentType, []byte(body))
			if !allowed[w.Code] {
				t.Fatalf("%s with %q (%s): %d %s", tg, body, contentType, w.Code, w.Body)
			}
		}
	})
}

// FuzzQueryParams: no query string on the read routes gets a 5xx or a
// panic, for a reader scoped to eu-1.
func FuzzQueryParams(f *testing.F) {
	a := newTestApp(f, "")
	a.remoteWrite(f, eu1Token, []time.Time{time.Now()}, "up", "job", "a")
	for _, s := range []string{
		"query=up", "query=sum(", "query=up&start=1&end=0&step=1", "match[]={job=\"a\"}", "query={app=\"x\"}&limit=-1",
		"tags=a%3Db", "q={}", "after=1&limit=5", "cluster=eu-1", "query=up&time=1e999", "query=rate(up[5m])&step=0.0001&start=0&end=1e9",
	} {
		f.Add(s)
	}
	targets := []string{
		"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels", "/api/v1/label/job/values",
		"/api/v1/query_exemplars", "/api/v1/metadata", "/loki/api/v1/query_range", "/loki/api/v1/query",
		"/loki/api/v1/series", "/api/search", "/api/v2/search/tag/name/values", "/api/v1/failover/drill",
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, path := range targets {
			r := httptest.NewRequest(http.MethodGet, path, nil)
			r.URL.RawQuery = raw
			r.Header.Set("Authorization", "Bearer "+readerToken)
			w := httptest.NewRecorder()
			a.routes.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("GET %s?%s: %d %s", path, raw, w.Code, w.Body)
			}
		}
	})
}
