package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
)

// TestAPI: the health handlers on the patterns cmd/fleetgate mounts them
// on, for a caller scoped to eu-1, one who sees every cluster and one
// without a scope (fail closed). eu-1 is healthy, us-1 never wrote, ap-1
// joined the registry after the last evaluation.
func TestAPI(t *testing.T) {
	reg := newFleet(t, "eu-1", "us-1")
	q := fakeQuerier{"up{": fptr(1), "kube_node_status_condition": fptr(1), "apiserver_request_total": fptr(0.001), "CrashLoopBackOff": fptr(0)}
	e, err := NewEvaluator(Config{}, q, reg, nil, logger)
	require.NoError(t, err)
	t0 := time.Now()
	for i := range 10 {
		now := t0.Add(time.Duration(i) * time.Second)
		reg.Get("eu-1").Written(now, 1, 1, 0, 0)
		e.Step(context.Background(), now.Add(100*time.Millisecond))
	}
	r, _ := e.Result("eu-1")
	require.Equal(t, Healthy, r.State, r.Reason)

	api := NewAPI(e, newFleet(t, "eu-1", "us-1", "ap-1"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/clusters/{name}/health", api.Cluster)
	mux.HandleFunc("GET /api/v1/health", api.All)
	mux.HandleFunc("GET /health/clusters/{name}", api.Check)
	mux.HandleFunc("HEAD /health/clusters/{name}", api.CheckHead)

	eu1, all, none := access.Clusters("eu-1"), access.All(), (*access.Scope)(nil)
	for _, tc := range []struct {
		method, path string
		scope        *access.Scope
		code         int
		want         string
	}{
		{"GET", "/api/v1/clusters/eu-1/health", &eu1, 200, `"state":"healthy"`},
		{"GET", "/api/v1/clusters/us-1/health", &all, 200, `"state":"unknown","score":0,"reason":"no telemetry received`},
		{"GET", "/api/v1/clusters/ap-1/health", &all, 200, `"state":"unknown","score":0,"reason":"not evaluated yet"`},
		{"GET", "/api/v1/clusters/us-1/health", &eu1, 404, `cluster \"us-1\" is not known`},
		{"GET", "/api/v1/clusters/mars/health", &all, 404, `"errorType":"not_found","error":"cluster \"mars\" is not known"`},
		{"GET", "/api/v1/clusters/eu-1/health", none, 404, "not known"},
		{"GET", "/api/v1/health", &eu1, 200, `"cluster":"eu-1"`},
		{"GET", "/api/v1/health", none, 200, `"data":[]`},
		{"GET", "/health/clusters/eu-1", &eu1, 200, `"state":"healthy"`},
		{"GET", "/health/clusters/us-1", &all, 503, `"state":"unknown"`},
		{"GET", "/health/clusters/us-1", &eu1, 404, "us-1"},
		{"GET", "/health/clusters/mars", &all, 404, "mars"},
		{"HEAD", "/health/clusters/eu-1", &all, 200, ""},
		{"HEAD", "/health/clusters/us-1", &all, 503, ""},
		{"HEAD", "/health/clusters/us-1", &eu1, 404, ""},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.scope != nil {
			r = r.WithContext(access.WithScope(r.Context(), *tc.scope))
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		name := tc.method + " " + tc.path
		require.Equal(t, tc.code, w.Code, "%s: %s", name, w.Body.String())
		require.Contains(t, w.Body.String(), tc.want, name)
		if tc.path == "/api/v1/health" && tc.scope == &eu1 {
			require.NotContains(t, w.Body.String(), "us-1", "%s: only the caller's clusters", name)
		}
		if strings.HasPrefix(tc.path, "/health/") && tc.method == "GET" && tc.code != 404 {
			require.Equal(t, "no-store", w.Header().Get("Cache-Control"), name)
		}
	}
}
