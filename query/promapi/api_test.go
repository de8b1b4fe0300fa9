package promapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
)

// Without an embedded TSDB (forward-only mode) the TSDB status endpoints
// answer a clear 422 like Prometheus in agent mode, never a 500.
func TestStatusTSDBWithoutEmbeddedTSDB(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	engine := NewEngine(Config{}, prometheus.NewRegistry(), logger)
	api, err := New(engine, Options{Queryable: emptyQueryable{}, Logger: logger})
	require.NoError(t, err)
	mux := http.NewServeMux()
	api.Register(mux)
	for _, path := range []string{"/api/v1/status/tsdb", "/api/v1/status/tsdb/blocks"} {
		w := httptest.NewRecorder()
		withScope(mux, access.All()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, http.StatusUnprocessableEntity, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), "forward-only")
	}
	w := httptest.NewRecorder()
	withScope(mux, access.All()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/status/buildinfo", nil))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
}

type emptyQueryable struct{}

func (emptyQueryable) Querier(int64, int64) (storage.Querier, error) {
	return storage.NoopQuerier(), nil
}
func (emptyQueryable) ChunkQuerier(int64, int64) (storage.ChunkQuerier, error) {
	return storage.NoopChunkedQuerier(), nil
}
