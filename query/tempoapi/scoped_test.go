package tempoapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/store/traces"
)

// withScope serves h with scope s in every request context (what
// access.Authenticator.Read does for a reader).
func withScope(h http.Handler, s access.Scope) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(access.WithScope(r.Context(), s)))
	})
}

// TestScopedReaderTempo: a reader's Tempo searches see its clusters only; a
// trace shows only the reader's spans, and a trace with none of them is a
// 404; no scope fails closed.
func TestScopedReaderTempo(t *testing.T) {
	ts, err := traces.Open(t.TempDir(), traces.Config{}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer ts.Close()
	now := time.Now().Add(-time.Minute)
	td := ptrace.NewTraces()
	for i, c := range []string{"eu-1", "us-1"} {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "svc-"+c)
		rs.Resource().Attributes().PutStr("cluster", c)
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		// Trace 1 spans both clusters; trace 2 is us-1's alone.
		for tr := 1; tr <= 2; tr++ {
			if tr == 2 && c == "eu-1" {
				continue
			}
			sp := spans.AppendEmpty()
			sp.SetTraceID(pcommon.TraceID{byte(tr)})
			sp.SetSpanID(pcommon.SpanID{byte(i + 1), byte(tr)})
			sp.SetName("op-" + c)
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
			sp.Attributes().PutStr("secret", "of-"+c)
		}
	}
	require.NoError(t, ts.PushTraces(context.Background(), td))

	mux := http.NewServeMux()
	New(ts).Register(mux)
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
	for _, path := range []string{
		"/api/search?tags=" + url.QueryEscape("name=op-us-1"),
		"/api/search/tag/secret/values",
		"/api/v2/search/tag/cluster/values",
		"/api/traces/01000000000000000000000000000000",
	} {
		code, all := get("*", path)
		require.Equal(t, 200, code, "%s: %s", path, all)
		require.Contains(t, all, "us-1", path)
		code, body := get("eu-1", path)
		require.Equal(t, 200, code, "%s: %s", path, body)
		require.NotContains(t, body, "us-1", path)
		if !strings.Contains(path, "op-us-1") {
			require.Contains(t, body, "eu-1", path)
		}
		code, _ = get("", path)
		require.Equal(t, 500, code, "no scope fails closed: %s", path)
	}
	code, _ := get("*", "/api/traces/02000000000000000000000000000000")
	require.Equal(t, 200, code)
	code, _ = get("eu-1", "/api/traces/02000000000000000000000000000000")
	require.Equal(t, 404, code, "a trace with none of the reader's spans")
	code, body := get("eu-1", "/api/search")
	require.Equal(t, 200, code)
	require.Contains(t, body, "01000000000000000000000000000000")
	require.NotContains(t, body, "02000000000000000000000000000000")
	require.NotContains(t, body, "svc-us-1", "the summary is built from visible spans only")
}
