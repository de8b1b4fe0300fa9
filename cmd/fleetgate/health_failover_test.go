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
