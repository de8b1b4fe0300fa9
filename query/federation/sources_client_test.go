package federation_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/internal/httpclient/httpclienttest"
	"github.com/fleetgate/fleetgate/query/federation"
	"github.com/fleetgate/fleetgate/query/promapi"
)

func loadEndpoint(t *testing.T, text string) fleet.QueryEndpoint {
	t.Helper()
	var ep fleet.QueryEndpoint
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&ep))
	require.NoError(t, ep.Validate())
	return ep
}

// sourceServer serves a Prometheus API (query and remote read) holding one
// series, behind wrap, over TLS.
func sourceServer(t *testing.T, wrap func(http.Handler) http.Handler) (string, string, int64) {
	now := time.Now().Truncate(time.Minute).UnixMilli()
	st := openStore(t)
	fill(t, st, now-10*60_000, now, 60_000, func(int64) float64 { return 1 }, labels.FromStrings("__name__", "up", "job", "remote"))
	plain := serveAPI(t, st, promapi.Config{})
	srv, ca := httpclienttest.TLSServer(t, wrap(plain.Config.Handler))
	return srv.URL, ca, now
}

// fetchUp selects up through a federation of s alone, with partial
// responses off, so a failure of s is the query's error.
func fetchUp(t *testing.T, s *federation.Source, now int64) error {
	t.Helper()
	strict := false
	ctx := federation.WithRequestOptions(context.Background(), federation.RequestOptions{PartialResponse: &strict})
	q, err := federation.New(nil, []*federation.Source{s}).Querier(now-5*60_000, now)
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(ctx, false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
	n := 0
	for set.Next() {
		n++
	}
	if err := set.Err(); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("got %d series, want 1", n)
	}
	return nil
}

// TestSourceTLSAndRotatingToken: both kinds of query source trust the CA
// of tls_config and read bearer_token_file again for every request.
func TestSourceTLSAndRotatingToken(t *testing.T) {
	tok := httpclienttest.NewToken(t, "first")
	u, ca, now := sourceServer(t, tok.Require)
	for _, kind := range []struct{ typ, path string }{{fleet.QueryRemoteRead, "/api/v1/read"}, {fleet.QueryPrometheus, ""}} {
		tok.Rotate(t, "first")
		ep := loadEndpoint(t, fmt.Sprintf("{type: %s, url: %s%s, bearer_token_file: %s, tls_config: {ca_file: %s}}", kind.typ, u, kind.path, tok.File(), ca))
		s, err := federation.NewSource("eu-1", labels.FromStrings("cluster", "eu-1"), ep, nil, quiet)
		require.NoError(t, err)
		require.NoError(t, fetchUp(t, s, now), kind.typ)
		tok.Rotate(t, "second")
		require.NoError(t, fetchUp(t, s, now), kind.typ+" after the token file changed")
	}
	require.Equal(t, []string{"Bearer first", "Bearer second", "Bearer first", "Bearer second"}, tok.Seen())
}

func TestSourceBasicAuthAndHeaders(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("hunter2\n"), 0o600))
	check := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, _ := r.BasicAuth(); u != "fg" || p != "hunter2" || r.Header.Get("X-Scope-OrgID") != "eu-1" {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	u, ca, now := sourceServer(t, check)
	for _, kind := range []struct{ typ, path string }{{fleet.QueryRemoteRead, "/api/v1/read"}, {fleet.QueryPrometheus, ""}} {
		ep := loadEndpoint(t, fmt.Sprintf("{type: %s, url: %s%s, basic_auth: {username: fg, password_file: %s}, headers: {X-Scope-OrgID: eu-1}, tls: {ca_file: %s}}", kind.typ, u, kind.path, pw, ca))
		s, err := federation.NewSource("eu-1", labels.FromStrings("cluster", "eu-1"), ep, nil, quiet)
		require.NoError(t, err)
		require.NoError(t, fetchUp(t, s, now), kind.typ)
	}
}
