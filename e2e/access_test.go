//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAccessControl: two real Prometheus servers remote-write as eu-1 and
// us-1; a reader scoped to eu-1 sees only eu-1 through /api/v1/query while
// the admin sees both; an anonymous admin call is refused and changes
// nothing; the admin's freeze works and names the admin as its actor.
func TestAccessControl(t *testing.T) {
	eu1, us1 := writeSecret(t, "eu-1", "eu-1-ingest"), writeSecret(t, "us-1", "us-1-ingest")
	adminTok, readerTok := writeSecret(t, "admin", "admin-secret"), writeSecret(t, "reader", "eu-team-secret")
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
- {name: eu-1, credentials: {bearer_token_file: %s}}
- {name: us-1, credentials: {bearer_token_file: %s}}
auth:
  admins: [{name: oncall, bearer_token_file: %s}]
  readers: [{name: eu-team, bearer_token_file: %s, clusters: [eu-1]}]
failover:
  groups: [{name: web, mode: active-passive, clusters: [eu-1, us-1]}]
`, eu1, us1, adminTok, readerTok))
	startPrometheus(t, "prometheus-eu-1", promConfig(fg.URL, eu1))
	startPrometheus(t, "prometheus-us-1", promConfig(fg.URL, us1))

	call := func(method, path, token string, body io.Reader, contentType string) (int, []byte) {
		req, err := http.NewRequest(method, fg.URL+path, body)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	clusters := func(token string) ([]string, error) {
		code, b := call("GET", "/api/v1/query?query="+url.QueryEscape(`count by (cluster) ({__name__=~".+"})`), token, nil, "")
		if code != 200 {
			return nil, fmt.Errorf("%d %s", code, b)
		}
		var r struct {
			Data struct {
				Result []struct{ Metric map[string]string } `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, err
		}
		var out []string
		for _, s := range r.Data.Result {
			out = append(out, s.Metric["cluster"])
		}
		sort.Strings(out)
		return out, nil
	}
	// Both clusters' data is there (the admin sees it) ...
	eventually(t, 45*time.Second, "both clusters written", func() error {
		got, err := clusters("admin-secret")
		if err != nil {
			return err
		}
		if len(got) != 2 {
			return fmt.Errorf("clusters %v", got)
		}
		return nil
	})
	// ... and the reader sees only eu-1.
	got, err := clusters("eu-team-secret")
	require.NoError(t, err)
	require.Equal(t, []string{"eu-1"}, got)
	code, b := call("GET", "/api/v1/label/cluster/values", "eu-team-secret", nil, "")
	require.Equal(t, 200, code, "%s", b)
	require.JSONEq(t, `{"status":"success","data":["eu-1"]}`, string(b))

	// No credential: reads and admin calls are refused; a cluster's ingest
	// token grants neither.
	code, _ = call("GET", "/api/v1/query?query=up", "", nil, "")
	require.Equal(t, 401, code)
	code, _ = call("GET", "/api/v1/query?query=up", "eu-1-ingest", nil, "")
	require.Equal(t, 401, code)
	freeze := `{"reason":"maintenance","duration":"1h"}`
	code, b = call("POST", "/api/v1/failover/groups/web/freeze", "", strings.NewReader(freeze), "text/plain")
	require.Equal(t, 401, code, "%s", b)
	code, b = call("POST", "/api/v1/failover/groups/web/freeze", "eu-team-secret", strings.NewReader(freeze), "application/json")
	require.Equal(t, 403, code, "%s", b)
	code, b = call("GET", "/api/v1/failover/events", "admin-secret", nil, "")
	require.Equal(t, 200, code)
	require.NotContains(t, string(b), `"kind":"freeze"`, "nothing changed")

	// The admin's freeze works and records who made it.
	code, b = call("POST", "/api/v1/failover/groups/web/freeze", "admin-secret", strings.NewReader(freeze), "application/json")
	require.Equal(t, 200, code, "%s", b)
	require.Contains(t, string(b), `"actor":"oncall"`)
	code, b = call("GET", "/api/v1/failover/groups", "admin-secret", nil, "")
	require.Equal(t, 200, code)
	require.Contains(t, string(b), `"frozen"`)
}
