package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// Credentials of the test app (see newTestApp).
const (
	adminToken  = "admin-secret"
	readerToken = "eu-team-secret" // reader scoped to eu-1
	eu1Token    = "eu-1-ingest"
	us1Token    = "us-1-ingest"
	wrongToken  = "not-a-token"
)

// testApp is the whole of fleetgate wired as serve wires it (main listener
// routes, no listeners of its own), over a temporary directory.
type testApp struct {
	*app
	dir string
}

// newTestApp starts fleetgate with clusters eu-1 and us-1 (each with its
// ingest token) and eu-2 (proven by the client certificate
// eu-2.clusters.test), an admin "oncall" (token, certificate ops.test or
// web-config user alice), a reader "eu-team" scoped to eu-1, a failover
// group "web" and HA pairs on; extra is appended to the config, args to
// the flags.
func newTestApp(t testing.TB, extra string, args ...string) *testApp {
	t.Helper()
	dir := t.TempDir()
	tok := func(name, v string) string {
		p := filepath.Join(dir, name+".token")
		require.NoError(t, os.WriteFile(p, []byte(v+"\n"), 0o600))
		return p
	}
	cfgText := `
clusters:
  - {name: eu-1, credentials: {bearer_token_file: ` + tok("eu-1", eu1Token) + `}}
  - {name: us-1, credentials: {bearer_token_file: ` + tok("us-1", us1Token) + `}}
  - {name: eu-2, credentials: {tls_names: [eu-2.clusters.test]}}
auth:
  admins:
    - {name: oncall, bearer_token_file: ` + tok("admin", adminToken) + `, tls_names: [ops.test], basic_auth_users: [alice]}
  readers:
    - {name: eu-team, bearer_token_file: ` + tok("reader", readerToken) + `, clusters: [eu-1]}
failover:
  groups: [{name: web, mode: active-passive, clusters: [eu-1, us-1]}]
ha: {enabled: true}
` + extra
	p := filepath.Join(dir, "fleetgate.yml")
	require.NoError(t, os.WriteFile(p, []byte(cfgText), 0o644))
	cfg, err := loadConfig(p)
	require.NoError(t, err)
	f, err := parseFlags(append([]string{"--storage.path", filepath.Join(dir, "data"), "--otlp.grpc-listen-address=", "--otlp.http-listen-address=",
		"--web.listen-address=127.0.0.1:0"}, args...))
	require.NoError(t, err)
	require.NoError(t, applyFlags(cfg, f))
	a, err := newApp(f, cfg, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(a.close)
	return &testApp{app: a, dir: dir}
}

// do serves one request in process (a panic fails the test) with the
// bearer token tok ("" for none).
func (a *testApp) do(t testing.TB, method, target, tok, contentType string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	a.routes.ServeHTTP(w, r)
	return w
}

// remoteWrite sends one remote-write 1.0 request as the cluster of tok:
// series name with the given labels, one sample per timestamp.
func (a *testApp) remoteWrite(t testing.TB, tok string, ts []time.Time, name string, lbls ...string) {
	t.Helper()
	s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}}}
	for i := 0; i+1 < len(lbls); i += 2 {
		s.Labels = append(s.Labels, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	for _, at := range ts {
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: at.UnixMilli(), Value: 1})
	}
	b, err := proto.Marshal(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}})
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(snappy.Encode(nil, b)))
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Content-Type", "application/x-protobuf")
	r.Header.Set("Content-Encoding", "snappy")
	r.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	w := httptest.NewRecorder()
	a.routes.ServeHTTP(w, r)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
}

// body is a response body as a string, for messages.
func body(w *httptest.ResponseRecorder) string { return strings.TrimSpace(w.Body.String()) }
