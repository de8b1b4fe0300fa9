package failover

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
)

// noData is a querier with no series (a drill's capacity has no data).
type noData struct{}

func (noData) Instant(context.Context, string, time.Time) (model.Vector, error) { return nil, nil }
func (noData) Range(context.Context, string, time.Time, time.Time, time.Duration) (model.Matrix, error) {
	return nil, nil
}

// TestAPI: the failover handlers on the patterns cmd/fleetgate mounts them
// on, the actions behind the real admin authentication (the actor of an
// event is the admin's name). Group web serves eu-1, with eu-2 and us-1 on
// standby.
func TestAPI(t *testing.T) {
	dir := t.TempDir()
	file := func(name, v string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(v+"\n"), 0o600))
		return p
	}
	var cc []fleet.ClusterConfig
	for _, n := range []string{"eu-1", "eu-2", "us-1"} {
		cc = append(cc, fleet.ClusterConfig{Name: n, Credentials: fleet.Credentials{BearerTokenFile: file(n, n+"-token")}})
	}
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: cc})
	require.NoError(t, err)
	auth, err := access.New(access.Config{Admins: []access.PrincipalConfig{{Name: "oncall", BearerTokenFile: file("admin", "admin-secret")}}},
		access.Options{ClusterToken: access.ClusterTokenOf(reg)})
	require.NoError(t, err)

	f := newCtrlFixture(t, dir)
	h := fakeHealth{stale: time.Minute, results: []health.Result{
		{Cluster: "eu-1", State: health.Healthy, Score: 100}, {Cluster: "eu-2", State: health.Healthy, Score: 100}, {Cluster: "us-1", State: health.Healthy, Score: 100},
	}}
	api := NewAPI(f.ctrl, reg, h, noData{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/failover/events", api.Events)
	mux.HandleFunc("GET /api/v1/failover/groups", api.Groups)
	mux.HandleFunc("GET /api/v1/failover/drill", api.SimulateDrill)
	mux.Handle("POST /api/v1/failover/drill", auth.Admin(http.HandlerFunc(api.Drill)))
	mux.Handle("POST /api/v1/failover/groups/{name}/freeze", auth.Admin(http.HandlerFunc(api.Freeze)))
	mux.Handle("DELETE /api/v1/failover/groups/{name}/freeze", auth.Admin(http.HandlerFunc(api.Unfreeze)))
	mux.Handle("POST /api/v1/failover/groups/{name}/override", auth.Admin(http.HandlerFunc(api.Override)))
	mux.Handle("DELETE /api/v1/failover/groups/{name}/override", auth.Admin(http.HandlerFunc(api.ClearOverride)))

	long := `{"reason":"` + string(bytes.Repeat([]byte("x"), access.MaxAdminText+1)) + `"}`
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/api/v1/failover/events?after=x", "", 400, `after: \"x\" is not an event id`},
		{"GET", "/api/v1/failover/events?limit=0", "", 400, "limit"},
		{"GET", "/api/v1/failover/events?limit=10001", "", 400, "limit"},
		{"GET", "/api/v1/failover/events", "", 200, `"data":[]`},
		{"GET", "/api/v1/failover/groups", "", 200, `"serving":["eu-1"]`},
		{"POST", "/api/v1/failover/groups/web/freeze", "{not json", 400, "request body"},
		{"POST", "/api/v1/failover/groups/web/freeze", `{"duration":"-5m"}`, 400, `duration: \"-5m\" is not a positive duration`},
		{"POST", "/api/v1/failover/groups/web/freeze", long, 400, "reason: 1025 bytes, at most 1024"},
		{"DELETE", "/api/v1/failover/groups/web/freeze", "", 400, "not frozen"},
		{"DELETE", "/api/v1/failover/groups/web/freeze", `{"reason":"x"}`, 400, "request body"},
		{"POST", "/api/v1/failover/groups/nope/freeze", "", 404, "nope"},
		{"POST", "/api/v1/failover/groups/web/override", `{"clusters":[]}`, 400, "at least one cluster"},
		{"POST", "/api/v1/failover/groups/web/override", `{"clusters":["mars"]}`, 400, `clusters[0]: unknown cluster \"mars\"`},
		{"POST", "/api/v1/failover/groups/web/freeze", `{"reason":"maintenance","duration":"10m"}`, 200, `"actor":"oncall"`},
		{"POST", "/api/v1/failover/groups/web/override", `{"clusters":["us-1"],"reason":"drain eu-1"}`, 200, `"actor":"oncall"`},
		{"DELETE", "/api/v1/failover/groups/web/override", "", 200, `"actor":"oncall"`},
		{"DELETE", "/api/v1/failover/groups/web/override", "", 400, ""},
		{"DELETE", "/api/v1/failover/groups/web/freeze", "", 200, `"actor":"oncall"`},
		{"GET", "/api/v1/failover/drill", "", 400, "cluster: missing"},
		{"GET", "/api/v1/failover/drill?cluster=mars", "", 404, `cluster \"mars\" is not known`},
		{"GET", "/api/v1/failover/drill?cluster=eu-1", "", 200, `"cluster":"eu-1"`},
		{"POST", "/api/v1/failover/drill?cluster=eu-1", "", 200, `"cluster":"eu-1"`},
		{"POST", "/api/v1/failover/drill", `{"cluster":"eu-1"}`, 200, `"cluster":"eu-1"`},
		{"POST", "/api/v1/failover/drill?cluster=eu-2", `{"cluster":"eu-1"}`, 400, `cluster: \"eu-2\" in the URL and \"eu-1\" in the body`},
		{"GET", "/api/v1/failover/events", "", 200, `"actor":"oncall"`},
		{"GET", "/api/v1/failover/events?limit=1", "", 200, `"kind":"unfreeze"`},
	} {
		r := httptest.NewRequest(tc.method, tc.path, bytes.NewReader([]byte(tc.body)))
		r.Header.Set("Authorization", "Bearer admin-secret")
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		require.Equal(t, tc.code, w.Code, "%s %s: %s", tc.method, tc.path, w.Body.String())
		require.Contains(t, w.Body.String(), tc.want, "%s %s", tc.method, tc.path)
	}
	require.Len(t, f.ctrl.Events(0, "", 0), 4, "freeze, override, clear, unfreeze; drills log nothing")
}
