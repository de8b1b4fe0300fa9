package lokiapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/store/logs"
)

// withScope serves h with scope s in every request context (what
// access.Authenticator.Read does for a reader).
func withScope(h http.Handler, s access.Scope) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(access.WithScope(r.Context(), s)))
	})
}

// TestScopedReaderLoki: the scope is injected into Loki stream selectors;
// no scope fails closed.
func TestScopedReaderLoki(t *testing.T) {
	ls, err := logs.Open(t.TempDir(), logs.Config{}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer ls.Close()
	now := time.Now().Add(-time.Minute)
	var streams []push.Stream
	for _, c := range []string{"eu-1", "us-1"} {
		streams = append(streams, push.Stream{Labels: fmt.Sprintf(`{cluster=%q, app="web"}`, c), Entries: []push.Entry{{Timestamp: now, Line: "hello from " + c}}})
	}
	require.NoError(t, ls.PushLogs(context.Background(), streams))

	mux := http.NewServeMux()
	New(ls).Register(mux)
	get := func(scope, path string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		rec := httptest.NewRecorder()
		if scope == "" {
			mux.ServeHTTP(rec, req)
		} else {
			withScope(mux, access.Clusters(strings.Split(scope, ",")...)).ServeHTTP(rec, req)
		}
		b, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(b)
	}
	sel := url.QueryEscape(`{app="web"}`)
	for _, path := range []string{
		"/loki/api/v1/query_range?query=" + sel,
		"/loki/api/v1/query?query=" + url.QueryEscape(`sum by (cluster) (count_over_time({app="web"}[1h]))`),
		"/loki/api/v1/series?match[]=" + sel,
		"/loki/api/v1/label/cluster/values",
	} {
		code, all := get("*", path)
		require.Equal(t, 200, code, "%s: %s", path, all)
		require.Contains(t, all, "us-1", path)
		code, body := get("eu-1", path)
		require.Equal(t, 200, code, "%s: %s", path, body)
		require.NotContains(t, body, "us-1", path)
		require.Contains(t, body, "eu-1", path)
		code, _ = get("", path)
		require.Equal(t, 500, code, "no scope fails closed: %s", path)
	}
}
