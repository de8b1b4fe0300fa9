package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHealthFailoverConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	require.NoError(t, os.WriteFile(tok, []byte("t"), 0o600))
	base := "clusters: [{name: eu-1, credentials: {bearer_token_file: " + tok + "}}]\n"
	for _, tc := range []struct{ cfg, want string }{
		{"health: {interval: 1s, suspect_interval: 2s}", "health.suspect_interval"},
		{"health: {signals: [{name: x, expr: 'sum(', good: 1}]}", "health.signals[0] (x).expr"},
		{"failover: {groups: [{name: web, mode: active-passive, clusters: [eu-9]}]}", "failover.groups[0] (web).clusters[0]: unknown cluster \"eu-9\""},
		{"failover: {groups: [{name: web, mode: sideways, clusters: [eu-1]}]}", "failover.groups[0] (web).mode"},
		{"failover: {groups: [{name: web, mode: active-active, clusters: [eu-1], dns: {namespace: x, hostname: a.example.com, targets: {eu-1: [1.2.3.4]}}}]}", "needs signals.kubernetes.dns_endpoints"},
		{"signals: {webhooks: [{name: h, url: 'not a url'}]}", "signals.webhooks[0].url"},
		{"signals: {alertmanagers: [{url: 'ftp://x'}]}", "signals.alertmanagers[0].url"},
		{"signals: {kubernetes: {leader_election: {enabled: true}}}", "signals.kubernetes.leader_election.namespace"},
		{"failover: {groups: [{name: web, mode: active-active, clusters: [eu-1], fail_afterr: 3}]}", "fail_afterr"},
	} {
		p := filepath.Join(dir, "c.yml")
		require.NoError(t, os.WriteFile(p, []byte(base+tc.cfg+"\n"), 0o644))
		_, err := loadConfig(p)
		require.Error(t, err, tc.cfg)
		require.Contains(t, err.Error(), tc.want)
	}
}

func TestHealthFailoverRoutes(t *testing.T) {
	a := newTestApp(t, "")
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/api/v1/clusters/eu-1/health", "", 200, `"state":"unknown"`},
		{"GET", "/api/v1/clusters/mars/health", "", 404, `cluster \"mars\" is not known`},
		{"GET", "/health/clusters/eu-1", "", 503, `"state":"unknown"`},
		{"GET", "/health/clusters/mars", "", 404, "mars"},
		{"GET", "/api/v1/failover/events?after=x", "", 400, "after"},
		{"GET", "/api/v1/failover/events?limit=0", "", 400, "limit"},
		{"GET", "/api/v1/failover/events", "", 200, `"data":[]`},
		{"GET", "/api/v1/failover/groups", "", 200, `"serving":["eu-1"]`},
		{"POST", "/api/v1/failover/groups/web/freeze", "{not json", 400, "request body"},
		{"POST", "/api/v1/failover/groups/web/freeze", `{"duration":"-5m"}`, 400, "duration"},
		{"DELETE", "/api/v1/failover/groups/web/freeze", "", 400, "not frozen"},
		{"POST", "/api/v1/failover/groups/nope/freeze", "", 404, "nope"},
		{"POST", "/api/v1/failover/groups/web/override", `{"clusters":[]}`, 400, "at least one cluster"},
		{"POST", "/api/v1/failover/groups/web/override", `{"clusters":["mars"]}`, 400, `clusters[0]: unknown cluster \"mars\"`},
		{"POST", "/api/v1/failover/groups/web/freeze", `{"reason":"maintenance","duration":"10m"}`, 200, `"actor":"oncall"`},
		{"GET", "/api/v1/failover/drill", "", 400, "cluster: missing"},
		{"GET", "/api/v1/failover/drill?cluster=mars", "", 404, "mars"},
		{"POST", "/api/v1/failover/drill?cluster=eu-1", "", 200, `"cluster":"eu-1"`},
		{"POST", "/api/v1/failover/drill", `{"cluster":"eu-1"}`, 200, `"cluster":"eu-1"`},
		{"GET", "/api/v1/failover/events", "", 200, `"actor":"oncall"`},
	} {
		var b []byte
		if tc.body != "" {
			b = []byte(tc.body)
		}
		w := a.do(t, tc.method, tc.path, adminToken, "application/json", b)
		require.Equal(t, tc.code, w.Code, "%s %s: %s", tc.method, tc.path, body(w))
		require.Contains(t, body(w), tc.want, "%s %s", tc.method, tc.path)
	}
}

// TestDrillCommandTokenFile: `fleetgate drill --token-file` reads the token
// as every other token is read (trimmed), and an empty file is an error
// before any request, not a drill sent without a credential.
func TestDrillCommandTokenFile(t *testing.T) {
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		_, _ = w.Write([]byte(`{"status":"success","data":{"cluster":"eu-1"}}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	empty, good := filepath.Join(dir, "empty"), filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(empty, []byte(" \n"), 0o600))
	require.NoError(t, os.WriteFile(good, []byte("admin-secret\n"), 0o600))
	require.Equal(t, 2, drillCommand([]string{"--cluster", "eu-1", "--url", srv.URL, "--token-file", empty}))
	require.Empty(t, auth, "no request without the token")
	require.Equal(t, 0, drillCommand([]string{"--cluster", "eu-1", "--url", srv.URL, "--token-file", good, "--json"}))
	require.Equal(t, []string{"Bearer admin-secret"}, auth)
}
