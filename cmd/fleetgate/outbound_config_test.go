package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOutboundClientConfig: every outbound destination takes the same
// client block (prometheus/common's HTTPClientConfig inlined, plus the
// older headers, bearer_token_env and tls keys), and a bad block gives an
// error naming its YAML path.
func TestOutboundClientConfig(t *testing.T) {
	tok := writeFile(t, "tok", "secret")
	block := "authorization: {credentials_file: " + tok + "}, tls_config: {ca_file: /ca.pem, server_name: x}, proxy_url: http://proxy:3128, http_headers: {X-A: {values: [a]}}, follow_redirects: false, enable_http2: false"
	older := "bearer_token_file: " + tok + ", headers: {X-Scope-OrgID: fleet}, tls: {ca_file: /ca.pem, insecure_skip_verify: true}"
	good := func(b string) string {
		return "clusters:\n  - {name: eu-1, query: {url: http://prom:9090/api/v1/read, " + b + "}}\n" +
			"forward:\n  destinations: [{name: mimir, url: https://mimir/api/v1/push, " + b + "}]\n  query: {type: prometheus, url: https://mimir/prometheus, " + b + "}\n" +
			"forward_logs: [{name: loki, url: https://loki/loki/api/v1/push, " + b + "}]\n" +
			"forward_traces: [{name: tempo, url: https://tempo/v1/traces, " + b + "}]\n" +
			"signals:\n  alertmanagers: [{url: https://am, " + b + "}]\n  webhooks: [{name: hook, url: https://hook, " + b + "}]\n"
	}
	for _, b := range []string{block, older, "basic_auth: {username: fg, password_file: " + tok + "}", "oauth2: {client_id: fg, client_secret_file: " + tok + ", token_url: https://idp/token}"} {
		_, err := loadConfig(writeFile(t, "fleetgate.yml", good(b)))
		require.NoError(t, err, b)
	}

	for _, tc := range []struct{ yml, want string }{
		{"clusters:\n  - {name: eu-1, query: {url: http://p, tls_config: {cert_file: /c}}}\n", "clusters[0].query.tls_config: exactly one of key or key_file must be configured"},
		{"forward:\n  destinations: [{name: mimir, url: http://m, basic_auth: {username: u}, bearer_token_file: /t}]\n", "forward.destinations[0] (mimir): at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"},
		{"forward:\n  query: {url: http://m, oauth2: {client_id: x}}\n", "forward.query.oauth2: oauth2 token_url must be configured"},
		{"forward_logs: [{name: loki, url: http://l, headers: {Authorization: x}}]\n", `forward_logs[0] (loki).headers: setting header "Authorization" is not allowed`},
		{"forward_traces: [{name: tempo, url: http://t, no_proxy: x}]\n", "forward_traces[0] (tempo).proxy_url: if no_proxy is configured, proxy_url must also be configured"},
		{"signals:\n  alertmanagers: [{url: http://am, tls: {ca_file: /a}, tls_config: {ca_file: /b}}]\n", "signals.alertmanagers[0].tls: set tls or tls_config, not both"},
		{"signals:\n  webhooks: [{name: h, url: http://h, authorization: {type: basic, credentials_file: /x}}]\n", `signals.webhooks[0].authorization: authorization type cannot be set to "basic"`},
		{"signals:\n  webhooks: [{name: h, url: http://h, basic_auth: {username: u, password: hunter2}}]\n", "signals.webhooks[0].basic_auth.password: secrets do not go in the config text; use password_file"},
	} {
		_, err := loadConfig(writeFile(t, "fleetgate.yml", tc.yml))
		require.Error(t, err, tc.yml)
		_, msg, _ := strings.Cut(err.Error(), ".yml: ")
		require.True(t, strings.HasPrefix(msg, tc.want), "%q does not start with %q", msg, tc.want)
	}
	_, err := loadConfig(writeFile(t, "fleetgate.yml", "forward_logs: [{name: loki, url: http://l, tls_confg: {}}]\n"))
	require.ErrorContains(t, err, "field tls_confg not found", "a misspelt key is still refused")
}
