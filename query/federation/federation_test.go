package federation_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/query/federation"
	"github.com/fleetgate/fleetgate/query/promapi"
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

// serveAPI serves fleetgate's Prometheus API over q, to every cluster: the
// remote clusters' APIs and the federated one under test.
func serveAPI(t testing.TB, q storage.SampleAndChunkQueryable, cfg promapi.Config) *httptest.Server {
	engine := promapi.NewEngine(cfg, nil, quiet)
	api, err := promapi.New(engine, promapi.Options{Config: cfg, Queryable: q, Logger: quiet, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(access.WithScope(r.Context(), access.All())))
	}))
	t.Cleanup(srv.Close)
	return srv
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

type vecSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func vector(t testing.TB, e envelope) []vecSample {
	var d struct {
		Result []vecSample `json:"result"`
	}
	require.NoError(t, json.Unmarshal(e.Data, &d))
	return d.Result
}

// fixture: a local store holding cluster "local", and two remote clusters
// "eu-1" (remote-read) and "us-1" (Prometheus HTTP API), each a real
// fleetgate API over its own TSDB, plus a dead cluster "dead".
type fixture struct {
	fed              *federation.Queryable
	srv              *httptest.Server
	euCount, usCount *atomic.Int64
	now              int64
}

func newFixture(t *testing.T, dead fleet.QueryEndpoint) *fixture {
	now := time.Now().Truncate(time.Minute).UnixMilli()
	local, eu, us := openStore(t), openStore(t), openStore(t)
	one := func(int64) float64 { return 1 }
	fill(t, local, now-10*60_000, now, 15_000, one, labels.FromStrings("__name__", "up", "job", "a", "cluster", "local"))
	fill(t, eu, now-10*60_000, now, 15_000, one, labels.FromStrings("__name__", "up", "job", "a"), labels.FromStrings("__name__", "up", "job", "b"))
	// us-1 is an HA pair: two replicas of the same series.
	fill(t, us, now-10*60_000, now, 15_000, one, labels.FromStrings("__name__", "up", "job", "a", "replica", "r1"))
	fill(t, us, now-10*60_000+7_000, now, 15_000, one, labels.FromStrings("__name__", "up", "job", "a", "replica", "r2"))

	euSrv := serveAPI(t, eu, promapi.Config{})
	usSrv := serveAPI(t, us, promapi.Config{})
	euProxy, euCount := countingProxy(t, euSrv.URL)
	usProxy, usCount := countingProxy(t, usSrv.URL)

	m, err := federation.NewSourceMetrics(nil)
	require.NoError(t, err)
	mk := func(name string, ep fleet.QueryEndpoint) *federation.Source {
		s, err := federation.NewSource(name, labels.FromStrings("cluster", name), ep, m, quiet)
		require.NoError(t, err)
		return s
	}
	sources := []*federation.Source{
		mk("eu-1", fleet.QueryEndpoint{URL: euProxy.URL + "/api/v1/read"}),
		mk("us-1", fleet.QueryEndpoint{Type: fleet.QueryPrometheus, URL: usProxy.URL, ReplicaLabels: []string{"replica"}}),
	}
	if dead.URL != "" {
		sources = append(sources, mk("dead", dead))
	}
	fed := federation.New(local, sources)
	srv := serveAPI(t, fed, promapi.Config{ResultsCache: promapi.CacheConfig{Disabled: true}})
	return &fixture{fed: fed, srv: srv, euCount: euCount, usCount: usCount, now: now}
}

func deadURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

func (f *fixture) instant(t *testing.T, q string, extra url.Values) (int, envelope) {
	p := url.Values{"query": {q}, "time": {strconvMs(f.now)}}
	for k, v := range extra {
		p[k] = v
	}
	code, e, _, _ := get(t, f.srv.URL, "/api/v1/query", p)
	return code, e
}

func strconvMs(ms int64) string { return model.Time(ms).String() }

func TestFederationUnionAndDedup(t *testing.T) {
	f := newFixture(t, fleet.QueryEndpoint{})
	code, e := f.instant(t, "up", nil)
	require.Equal(t, 200, code, e.Error)
	got := map[string]bool{}
	for _, s := range vector(t, e) {
		got[s.Metric["cluster"]+"/"+s.Metric["job"]+"/"+s.Metric["replica"]] = true
	}
	require.Equal(t, map[string]bool{"local/a/": true, "eu-1/a/": true, "eu-1/b/": true, "us-1/a/": true}, got, "dedup is on by default: one us-1 series")

	code, e = f.instant(t, "sum(up)", nil)
	require.Equal(t, 200, code)
	require.Equal(t, "4", vector(t, e)[0].Value[1])

	// dedup=false keeps both replicas.
	code, e = f.instant(t, "count(up{cluster=\"us-1\"})", url.Values{"dedup": {"false"}})
	require.Equal(t, 200, code)
	require.Equal(t, "2", vector(t, e)[0].Value[1])

	// The deduplicated series keeps one replica's sampling rate.
	code, e = f.instant(t, "count_over_time(up{cluster=\"us-1\"}[5m])", nil)
	require.Equal(t, 200, code)
	require.Equal(t, "20", vector(t, e)[0].Value[1])

	// Label APIs see the stamped cluster label.
	code, e, _, _ = get(t, f.srv.URL, "/api/v1/label/cluster/values", url.Values{})
	require.Equal(t, 200, code)
	var vals []string
	require.NoError(t, json.Unmarshal(e.Data, &vals))
	require.Equal(t, []string{"eu-1", "local", "us-1"}, vals)
}

func TestFederationClusterPruning(t *testing.T) {
	for _, tc := range []struct {
		query      string
		eu, us     bool
		wantSeries int
	}{
		{`up{cluster="eu-1"}`, true, false, 2},
		{`up{cluster=~"eu-.*"}`, true, false, 2},
		{`up{cluster="us-1"}`, false, true, 1},
		{`up{cluster!="eu-1"}`, false, true, 2},
		{`up{cluster="local"}`, false, false, 1},
		{`up`, true, true, 4},
	} {
		t.Run(tc.query, func(t *testing.T) {
			f := newFixture(t, fleet.QueryEndpoint{})
			f.euCount.Store(0)
			f.usCount.Store(0)
			code, e := f.instant(t, tc.query, nil)
			require.Equal(t, 200, code, e.Error)
			require.Len(t, vector(t, e), tc.wantSeries)
			require.Equal(t, tc.eu, f.euCount.Load() > 0, "eu-1 asked")
			require.Equal(t, tc.us, f.usCount.Load() > 0, "us-1 asked")
		})
	}
}

func TestFederationPartialResponse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dead     fleet.QueryEndpoint
		params   url.Values
		wantCode int
		wantErr  bool
	}{
		{"default is partial with a warning", fleet.QueryEndpoint{}, nil, 200, false},
		{"partial_response=true", fleet.QueryEndpoint{}, url.Values{"partial_response": {"true"}}, 200, false},
		{"partial_response=false fails", fleet.QueryEndpoint{}, url.Values{"partial_response": {"false"}}, 422, true},
		{"required cluster fails", fleet.QueryEndpoint{Required: true}, nil, 422, true},
		{"remote-read source", fleet.QueryEndpoint{Type: fleet.QueryRemoteRead}, nil, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := tc.dead
			ep.URL = deadURL(t)
			if ep.Type == "" {
				ep.Type = fleet.QueryPrometheus
			} else {
				ep.URL += "/api/v1/read"
			}
			f := newFixture(t, ep)
			code, e := f.instant(t, "sum(up)", tc.params)
			require.Equal(t, tc.wantCode, code, "%+v", e)
			if tc.wantErr {
				require.Contains(t, e.Error, `cluster "dead"`)
				return
			}
			require.Equal(t, "4", vector(t, e)[0].Value[1])
			require.Len(t, e.Warnings, 1)
			require.Contains(t, e.Warnings[0], `cluster "dead"`)
		})
	}
	t.Run("bad parameter is a 400 naming it", func(t *testing.T) {
		f := newFixture(t, fleet.QueryEndpoint{})
		code, e := f.instant(t, "up", url.Values{"partial_response": {"maybe"}})
		require.Equal(t, 400, code)
		require.Contains(t, e.Error, "partial_response")
		code, e = f.instant(t, "up", url.Values{"replicaLabels[]": {""}})
		require.Equal(t, 400, code)
		require.Contains(t, e.Error, "replicaLabels[]")
	})
	t.Run("probe marks a dead source down, queries skip it at once", func(t *testing.T) {
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}))
		t.Cleanup(slow.Close)
		f := newFixture(t, fleet.QueryEndpoint{Type: fleet.QueryPrometheus, URL: slow.URL, Timeout: model.Duration(500 * time.Millisecond)})
		var src *federation.Source
		for _, s := range f.fed.Sources() {
			if s.Status().Cluster == "dead" {
				src = s
			}
		}
		src.Probe(context.Background())
		require.False(t, src.Status().Up)
		start := time.Now()
		code, e := f.instant(t, "sum(up)", nil)
		require.Less(t, time.Since(start), 400*time.Millisecond, "a down source must not be waited for")
		require.Equal(t, 200, code)
		require.Contains(t, strings.Join(e.Warnings, " "), "marked down")
	})
}
