package remotewrite

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/internal/httpclient/httpclienttest"
)

func loadForward(t *testing.T, text string) Config {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	require.NoError(t, c.Validate())
	return c
}

// tlsReceiver is a remote-write receiver over TLS behind wrap.
func tlsReceiver(t *testing.T, wrap func(http.Handler) http.Handler) (string, string, *tsdb.DB) {
	db, err := tsdb.Open(t.TempDir(), quiet, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	h := remote.NewWriteHandler(quiet, prometheus.NewRegistry(), db, remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType}, false, false)
	srv, ca := httpclienttest.TLSServer(t, wrap(h))
	return srv.URL, ca, db
}

// forwardBatches starts a forwarder for cfg and appends batches of n
// samples; between batches it calls between(i) and waits until the
// destination holds everything written so far.
func forwardBatches(t *testing.T, cfg Config, db *tsdb.DB, batches, n int, between func(int)) {
	dir := t.TempDir()
	src, err := tsdb.Open(dir, quiet, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	fw, err := New(cfg, dir, prometheus.NewRegistry(), quiet)
	require.NoError(t, err)
	src.SetWriteNotified(fw.WriteNotified())
	t.Cleanup(func() {
		require.NoError(t, fw.Close())
		require.NoError(t, src.Close())
	})
	// The queue's WAL watcher skips what was written before it started:
	// write a sample at a time until one arrives.
	require.Eventually(t, func() bool {
		app := src.AppenderV2(context.Background())
		_, err := app.Append(0, labels.FromStrings("__name__", "fwd_client_warmup", "cluster", "eu-1"), 0, time.Now().UnixMilli(), 1, nil, nil, storage.AOptions{})
		require.NoError(t, err)
		require.NoError(t, app.Commit())
		return count(t, db, "fwd_client_warmup") > 0
	}, time.Minute, 50*time.Millisecond, "the queue starts (the WAL watcher also polls every 15s)")
	now := time.Now().UnixMilli()
	for b := range batches {
		if b > 0 {
			between(b)
		}
		app := src.AppenderV2(context.Background())
		for i := range n {
			_, err := app.Append(0, labels.FromStrings("__name__", "fwd_client_test", "cluster", "eu-1"), 0, now+int64(b*n+i), float64(i), nil, nil, storage.AOptions{})
			require.NoError(t, err)
		}
		require.NoError(t, app.Commit())
		want := (b + 1) * n
		require.Eventually(t, func() bool { return count(t, db, "fwd_client_test") == want }, 20*time.Second, 50*time.Millisecond, "batch %d", b)
	}
}

const fastQueue = "queue: {batch_send_deadline: 50ms, min_backoff: 20ms, max_backoff: 100ms}"

// TestForwardTLSAndRotatingToken: the destination's CA comes from
// tls_config and its token file is read again for every request: the
// receiver refuses the first token once the file holds the second, and a
// 401 is not retried, so the second batch arrives only if the file was
// read again.
func TestForwardTLSAndRotatingToken(t *testing.T) {
	tok := httpclienttest.NewToken(t, "first")
	u, ca, db := tlsReceiver(t, tok.Require)
	cfg := loadForward(t, fmt.Sprintf(`
destinations:
  - name: mimir
    url: %s
    authorization: {credentials_file: %s}
    tls_config: {ca_file: %s}
    %s
`, u, tok.File(), ca, fastQueue))
	forwardBatches(t, cfg, db, 2, 20, func(int) { tok.Rotate(t, "second") })
	seen := tok.Seen()
	require.Equal(t, "Bearer first", seen[0])
	require.Equal(t, "Bearer second", seen[len(seen)-1])
	require.NotContains(t, seen, "", "every request carried a token")
}

func TestForwardBasicAuthAndHeaders(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("hunter2\n"), 0o600))
	check := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, _ := r.BasicAuth(); u != "fg" || p != "hunter2" || r.Header.Get("X-Scope-OrgID") != "fleet" {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	u, ca, db := tlsReceiver(t, check)
	cfg := loadForward(t, fmt.Sprintf(`
destinations:
  - {name: mimir, url: %s, basic_auth: {username: fg, password_file: %s}, headers: {X-Scope-OrgID: fleet}, tls: {ca_file: %s}, %s}
`, u, pw, ca, fastQueue))
	forwardBatches(t, cfg, db, 1, 20, nil)
}

func TestForwardClientConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"destinations: [{name: a, url: http://x, tls_config: {cert_file: /c}}]", "destinations[0] (a).tls_config: exactly one of key or key_file"},
		{"destinations: [{name: a, url: http://x, bearer_token_env: T, bearer_token_file: /t}]", "destinations[0] (a).bearer_token_env: set only one of"},
		{"destinations: [{name: a, url: http://x, tls: {ca_file: /a}, tls_config: {ca_file: /b}}]", "destinations[0] (a).tls: set tls or tls_config, not both"},
		{"query: {url: http://q, basic_auth: {username: u, password: p, password_file: /p}}", "query.basic_auth: at most one of basic_auth password"},
	} {
		var c Config
		dec := yaml.NewDecoder(bytes.NewReader([]byte(tc.text)))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(&c), tc.text)
		require.ErrorContains(t, c.Validate(), tc.want, tc.text)
	}
}
