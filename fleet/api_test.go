package fleet

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStatusHandler: GET /api/v1/clusters lists the clusters the caller
// may see, in the success envelope; none is an empty list, not null.
func TestStatusHandler(t *testing.T) {
	t.Setenv("TA", "a-token")
	t.Setenv("TB", "b-token")
	r, err := NewRegistry(Config{Clusters: []ClusterConfig{
		{Name: "a", Region: "eu", Credentials: Credentials{BearerTokenEnv: "TA"}},
		{Name: "b", Credentials: Credentials{BearerTokenEnv: "TB"}},
	}})
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		visible func(*http.Request, string) bool
		want    []string
	}{
		{"every cluster", func(*http.Request, string) bool { return true }, []string{"a", "b"}},
		{"only a", func(_ *http.Request, c string) bool { return c == "a" }, []string{"a"}},
		{"none", func(*http.Request, string) bool { return false }, []string{}},
	} {
		w := httptest.NewRecorder()
		r.StatusHandler(tc.visible).ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/clusters", nil))
		require.Equal(t, http.StatusOK, w.Code, tc.name)
		var env struct {
			Status string   `json:"status"`
			Data   []Status `json:"data"`
		}
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &env), tc.name)
		require.Equal(t, "success", env.Status, tc.name)
		require.NotNil(t, env.Data, "%s: %s", tc.name, w.Body.String())
		names := []string{}
		for _, s := range env.Data {
			names = append(names, s.Name)
		}
		require.Equal(t, tc.want, names, tc.name)
	}
}
