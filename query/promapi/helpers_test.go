package promapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/store/metrics"
)

var quiet = slog.New(slog.DiscardHandler)

func openStore(t testing.TB) *metrics.Store {
	s, err := metrics.Open(metrics.Config{Path: t.TempDir(), BlockDuration: model.Duration(24 * time.Hour), OutOfOrderWindow: model.Duration(365 * 24 * time.Hour)}, nil, quiet)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// fill appends series with a sample every step from `from` to `to` (ms), value f(t).
func fill(t testing.TB, s storage.AppendableV2, from, to, step int64, f func(int64) float64, series ...labels.Labels) {
	app := s.AppenderV2(context.Background())
	for _, ls := range series {
		for ts := from; ts <= to; ts += step {
			_, err := app.Append(0, ls, 0, ts, f(ts), nil, nil, storage.AOptions{})
			require.NoError(t, err)
		}
	}
	require.NoError(t, app.Commit())
}

// serveAPI serves fleetgate's Prometheus API over q.
func serveAPI(t testing.TB, q storage.SampleAndChunkQueryable, cfg Config) (*httptest.Server, *API) {
	engine := NewEngine(cfg, nil, quiet)
	api, err := New(engine, Options{Config: cfg, Queryable: q, Logger: quiet, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(withScope(mux, access.All()))
	t.Cleanup(srv.Close)
	return srv, api
}

// countingProxy forwards to target and counts requests.
func countingProxy(t testing.TB, target string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	u, _ := url.Parse(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		r2 := r.Clone(r.Context())
		r2.URL.Scheme, r2.URL.Host, r2.RequestURI = u.Scheme, u.Host, ""
		resp, err := http.DefaultTransport.RoundTrip(r2)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

type envelope struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Data      json.RawMessage `json:"data"`
}

func get(t testing.TB, base, path string, params url.Values) (int, envelope, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(base + path + "?" + params.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e envelope
	require.NoErrorf(t, json.Unmarshal(b, &e), "%s", b)
	return resp.StatusCode, e, resp.Header, b
}

// deadURL is the address of a server that is gone.
func deadURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

func strconvMs(ms int64) string { return model.Time(ms).String() }
