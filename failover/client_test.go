package failover

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/internal/httpclient/httpclienttest"
)

func loadSignals(t *testing.T, text string) SignalsConfig {
	t.Helper()
	var c SignalsConfig
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	require.NoError(t, c.Validate())
	return c
}

func deliverAll(t *testing.T, sinks []Sink) {
	t.Helper()
	ev := Event{ID: 1, Time: time.Now(), Group: "web", Mode: ActivePassive, Kind: KindDrain, Cluster: "eu-1", Serving: []string{"eu-2"}}
	for _, s := range sinks {
		ps, err := s.Payloads(ev)
		require.NoError(t, err)
		require.NoError(t, s.Deliver(context.Background(), &Message{ID: 1, EventID: 1, Payload: ps[0]}), s.Name())
	}
}

// TestSinksTLSAndRotatingToken: the Alertmanager and webhook senders trust
// the CA of tls_config (or the older tls), and read their token file again
// for every request.
func TestSinksTLSAndRotatingToken(t *testing.T) {
	tok := httpclienttest.NewToken(t, "first")
	srv, ca := httpclienttest.TLSServer(t, tok.Require(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	c := loadSignals(t, fmt.Sprintf(`
alertmanagers:
  - url: %[1]s
    authorization: {credentials_file: %[2]s}
    tls_config: {ca_file: %[3]s}
webhooks:
  - {name: am, url: %[1]s/am, bearer_token_file: %[2]s, tls_config: {ca_file: %[3]s}}
  - {name: ce, url: %[1]s/ce, format: cloudevents, bearer_token_file: %[2]s, tls: {ca_file: %[3]s}}
`, srv.URL, tok.File(), ca))
	am, err := NewAlertmanagerSink(c.Alertmanagers[0], time.Minute, "http://fg")
	require.NoError(t, err)
	wh, err := NewWebhookSink(c.Webhooks[0], "http://fg")
	require.NoError(t, err)
	ce, err := NewWebhookSink(c.Webhooks[1], "http://fg")
	require.NoError(t, err)
	sinks := []Sink{am, wh, ce}

	deliverAll(t, sinks)
	tok.Rotate(t, "second")
	deliverAll(t, sinks)
	require.Equal(t, []string{"Bearer first", "Bearer first", "Bearer first", "Bearer second", "Bearer second", "Bearer second"}, tok.Seen())
}

func TestSinksBasicAuthAndHeaders(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("hunter2\n"), 0o600))
	var got []string
	srv, ca := httpclienttest.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		got = append(got, u+":"+p+" "+r.Header.Get("X-Tenant")+" "+r.UserAgent())
	}))
	c := loadSignals(t, fmt.Sprintf(`
alertmanagers:
  - url: %[1]s
    basic_auth: {username: fg, password_file: %[2]s}
    http_headers: {X-Tenant: {values: [ops]}}
    tls_config: {ca_file: %[3]s}
webhooks:
  - {name: am, url: %[1]s/am, basic_auth: {username: fg, password_file: %[2]s}, headers: {X-Tenant: ops}, tls_config: {ca_file: %[3]s}}
`, srv.URL, pw, ca))
	am, err := NewAlertmanagerSink(c.Alertmanagers[0], time.Minute, "http://fg")
	require.NoError(t, err)
	wh, err := NewWebhookSink(c.Webhooks[0], "http://fg")
	require.NoError(t, err)
	deliverAll(t, []Sink{am, wh})
	require.Equal(t, []string{"fg:hunter2 ops fleetgate", "fg:hunter2 ops fleetgate"}, got)
}

func TestSignalsClientConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"alertmanagers: [{url: http://am, tls_config: {cert_file: /c}}]", "alertmanagers[0].tls_config: exactly one of key or key_file"},
		{"alertmanagers: [{url: http://am, basic_auth: {username: u}, authorization: {credentials_file: /x}}]", "alertmanagers[0]: at most one of basic_auth, oauth2 & authorization"},
		{"webhooks: [{name: w, url: http://w, oauth2: {client_id: x}}]", "webhooks[0].oauth2: oauth2 token_url must be configured"},
		{"webhooks: [{name: w, url: http://w, http_headers: {Content-Type: {values: [x]}}}]", "webhooks[0].http_headers: setting header \"Content-Type\" is not allowed"},
	} {
		var c SignalsConfig
		dec := yaml.NewDecoder(bytes.NewReader([]byte(tc.text)))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(&c), tc.text)
		require.ErrorContains(t, c.Validate(), tc.want, tc.text)
	}
}
