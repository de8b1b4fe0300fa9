package promapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/query/federation"
)

// withScope serves h with scope s in every request context (what
// access.Authenticator.Read does for a reader).
func withScope(h http.Handler, s access.Scope) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(access.WithScope(r.Context(), s)))
	})
}

// scopeByHeader serves h with the scope named by X-Test-Scope ("*" or a
// comma list); without the header there is no scope at all.
func scopeByHeader(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("X-Test-Scope"); v != "" {
			r = r.WithContext(access.WithScope(r.Context(), access.Clusters(strings.Split(v, ",")...)))
		}
		h.ServeHTTP(w, r)
	})
}

type scopedFixture struct {
	srv     *httptest.Server
	now     int64
	usCount *atomic.Int64
}

// newScopedFixture: the embedded store holds eu-1 and us-1; eu-1 is also a
// remote-read source (job "remote"), us-2 a Prometheus-API source. The
// API reads the federation through access.NewQueryable, with the cache on.
func newScopedFixture(t *testing.T) *scopedFixture {
	now := time.Now().Truncate(time.Minute).UnixMilli()
	local, euRemote, usRemote := openStore(t), openStore(t), openStore(t)
	one := func(int64) float64 { return 1 }
	from := now - 3*dayMs
	fill(t, local, from, now, 60_000, one,
		labels.FromStrings("__name__", "up", "job", "a", "cluster", "eu-1"),
		labels.FromStrings("__name__", "up", "job", "a", "cluster", "us-1"),
		labels.FromStrings("__name__", "secret_total", "job", "b", "cluster", "us-1"))
	fill(t, euRemote, from, now, 60_000, one, labels.FromStrings("__name__", "up", "job", "remote"))
	fill(t, usRemote, from, now, 60_000, one, labels.FromStrings("__name__", "up", "job", "remote"))
	local.Metadata().SetMetadata("eu-1", "up", metadata.Metadata{Type: model.MetricTypeGauge, Help: "up"})
	local.Metadata().SetMetadata("us-1", "secret_total", metadata.Metadata{Type: model.MetricTypeCounter, Help: "secret"})

	euSrv, _ := serveAPI(t, euRemote, Config{})
	usSrv, _ := serveAPI(t, usRemote, Config{})
	usProxy, usCount := countingProxy(t, usSrv.URL)
	m, err := federation.NewSourceMetrics(nil)
	require.NoError(t, err)
	mk := func(name string, ep fleet.QueryEndpoint) *federation.Source {
		s, err := federation.NewSource(name, labels.FromStrings("cluster", name), ep, m, quiet)
		require.NoError(t, err)
		return s
	}
	fed := federation.New(local, []*federation.Source{
		mk("eu-1", fleet.QueryEndpoint{URL: euSrv.URL + "/api/v1/read"}),
		mk("us-2", fleet.QueryEndpoint{Type: fleet.QueryPrometheus, URL: usProxy.URL}),
	})
	engine := NewEngine(Config{}, nil, quiet)
	api, err := New(engine, Options{Queryable: access.NewQueryable(fed), Exemplars: access.NewExemplarQueryable(local.ExemplarQueryable()),
		TSDB: local, TSDBDir: t.TempDir(), Metadata: local.Metadata(), Logger: quiet, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(scopeByHeader(mux))
	t.Cleanup(srv.Close)
	return &scopedFixture{srv: srv, now: now, usCount: usCount}
}

func (f *scopedFixture) get(t *testing.T, scope, path string, params url.Values) (int, envelope, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path+"?"+params.Encode(), nil)
	require.NoError(t, err)
	if scope != "" {
		req.Header.Set("X-Test-Scope", scope)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e envelope
	require.NoErrorf(t, json.Unmarshal(b, &e), "%s", b)
	return resp.StatusCode, e, resp.Header
}

func clustersOf(t *testing.T, e envelope) []string {
	t.Helper()
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	}
	require.NoError(t, json.Unmarshal(e.Data, &d), "%s", e.Data)
	var out []string
	for _, r := range d.Result {
		out = append(out, r.Metric["cluster"])
	}
	sort.Strings(out)
	return out
}

// TestScopedReaderPromQL: a reader scoped to eu-1 sees only eu-1 through
// PromQL (local and federated remote series), series, labels, label values
// and metadata, with us-1 and us-2 data present; a remote source of
// another cluster is not even asked; no scope fails closed.
func TestScopedReaderPromQL(t *testing.T) {
	f := newScopedFixture(t)
	at := url.Values{"time": {strconvMs(f.now)}}
	q := func(expr string) url.Values {
		return url.Values{"query": {expr}, "time": at["time"]}
	}

	code, e, _ := f.get(t, "*", "/api/v1/query", q(`count by (cluster) (up)`))
	require.Equal(t, 200, code, e.Error)
	require.Equal(t, []string{"eu-1", "us-1", "us-2"}, clustersOf(t, e), "all of the data is there")
	asked := f.usCount.Load()

	for _, expr := range []string{`{__name__=~".+"}`, `count by (cluster) (up)`, `up{job="remote"}`, `sum by (cluster) (rate(up[5m]))`} {
		code, e, _ = f.get(t, "eu-1", "/api/v1/query", q(expr))
		require.Equal(t, 200, code, e.Error)
		got := clustersOf(t, e)
		require.NotEmpty(t, got, expr)
		for _, c := range got {
			require.Equal(t, "eu-1", c, expr)
		}
	}
	code, e, _ = f.get(t, "eu-1", "/api/v1/query", q(`up{job="remote"}`))
	require.Equal(t, 200, code)
	require.Len(t, clustersOf(t, e), 1, "the federated eu-1 source answers")
	require.Equal(t, asked, f.usCount.Load(), "the us-2 source is pruned by the injected matcher")
	for _, expr := range []string{`up{cluster="us-1"}`, `secret_total`, `{cluster=~"us-.*"}`} {
		code, e, _ = f.get(t, "eu-1", "/api/v1/query", q(expr))
		require.Equal(t, 200, code)
		require.Empty(t, clustersOf(t, e), expr)
	}

	// series, labels, label values.
	rng := url.Values{"start": {strconvMs(f.now - 3600_000)}, "end": {strconvMs(f.now)}}
	p := url.Values{"match[]": {`{__name__=~".+"}`}}
	for k, v := range rng {
		p[k] = v
	}
	code, e, _ = f.get(t, "eu-1", "/api/v1/series", p)
	require.Equal(t, 200, code, e.Error)
	var series []map[string]string
	require.NoError(t, json.Unmarshal(e.Data, &series))
	require.Len(t, series, 2)
	for _, s := range series {
		require.Equal(t, "eu-1", s["cluster"])
	}
	for path, want := range map[string][]string{
		"/api/v1/label/cluster/values":  {"eu-1"},
		"/api/v1/label/__name__/values": {"up"},
		"/api/v1/label/job/values":      {"a", "remote"},
	} {
		code, e, _ = f.get(t, "eu-1", path, rng)
		require.Equal(t, 200, code, e.Error)
		var vals []string
		require.NoError(t, json.Unmarshal(e.Data, &vals))
		require.Equal(t, want, vals, path)
	}
	code, e, _ = f.get(t, "eu-1", "/api/v1/labels", rng)
	require.Equal(t, 200, code, e.Error)
	require.NotContains(t, string(e.Data), "secret")

	// Metadata: only families reported by visible clusters.
	code, e, _ = f.get(t, "eu-1", "/api/v1/metadata", nil)
	require.Equal(t, 200, code)
	require.Contains(t, string(e.Data), `"up"`)
	require.NotContains(t, string(e.Data), "secret_total")
	code, e, _ = f.get(t, "*", "/api/v1/metadata", nil)
	require.Equal(t, 200, code)
	require.Contains(t, string(e.Data), "secret_total")

	// TSDB status reveals every cluster's cardinality.
	code, _, _ = f.get(t, "eu-1", "/api/v1/status/tsdb", nil)
	require.Equal(t, 403, code)
	code, _, _ = f.get(t, "*", "/api/v1/status/tsdb", nil)
	require.Equal(t, 200, code)

	// Exemplars go through the scoped exemplar queryable.
	code, e, _ = f.get(t, "eu-1", "/api/v1/query_exemplars", url.Values{"query": {`up`}, "start": rng["start"], "end": rng["end"]})
	require.Equal(t, 200, code, e.Error)

	// No scope in the context: the queryable fails closed.
	code, e, _ = f.get(t, "", "/api/v1/query", q(`up`))
	require.GreaterOrEqual(t, code, 400)
	require.Contains(t, e.Error, "no reader scope")
	code, _, _ = f.get(t, "", "/api/v1/series", p)
	require.GreaterOrEqual(t, code, 400)
	code, _, _ = f.get(t, "", "/api/v1/metadata", nil)
	require.GreaterOrEqual(t, code, 400)
}

// TestScopedReaderCache: the results cache key holds the scope, so an
// admin's cached answer is never served to a scoped reader.
func TestScopedReaderCache(t *testing.T) {
	f := newScopedFixture(t)
	step := int64(300_000)
	start := ((f.now-2*dayMs)/step + 1) * step
	p := url.Values{"query": {`count by (cluster) (up)`}, "start": {strconvMs(start)}, "end": {strconvMs(f.now - 2*3600_000)}, "step": {"300"}}
	clusters := func(e envelope) []string {
		var d struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		}
		require.NoError(t, json.Unmarshal(e.Data, &d))
		var out []string
		for _, r := range d.Result {
			out = append(out, r.Metric["cluster"])
		}
		sort.Strings(out)
		return out
	}
	code, e, h := f.get(t, "*", "/api/v1/query_range", p)
	require.Equal(t, 200, code, e.Error)
	require.Equal(t, "miss", h.Get(cacheHeader))
	require.Equal(t, []string{"eu-1", "us-1", "us-2"}, clusters(e))
	code, _, h = f.get(t, "*", "/api/v1/query_range", p)
	require.Equal(t, 200, code)
	require.Equal(t, "hit", h.Get(cacheHeader))

	code, e, h = f.get(t, "eu-1", "/api/v1/query_range", p)
	require.Equal(t, 200, code, e.Error)
	require.Equal(t, "miss", h.Get(cacheHeader), "the admin's entry is not the reader's")
	require.Equal(t, []string{"eu-1"}, clusters(e))
	code, e, h = f.get(t, "eu-1", "/api/v1/query_range", p)
	require.Equal(t, 200, code)
	require.Equal(t, "hit", h.Get(cacheHeader))
	require.Equal(t, []string{"eu-1"}, clusters(e))

	// Without a scope the cache steps aside and the API fails closed.
	code, _, h = f.get(t, "", "/api/v1/query_range", p)
	require.GreaterOrEqual(t, code, 400)
	require.Equal(t, "bypass", h.Get(cacheHeader))
}

// TestScopedReaderRemoteRead: remote-read (sampled and streamed chunks)
// answers only eu-1's series to a reader scoped to eu-1.
func TestScopedReaderRemoteRead(t *testing.T) {
	f := newScopedFixture(t)
	read := func(scope string, streamed bool) []labels.Labels {
		m, err := remote.ToQuery(f.now-3600_000, f.now, []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")}, nil)
		require.NoError(t, err)
		rr := &prompb.ReadRequest{Queries: []*prompb.Query{m}}
		if streamed {
			rr.AcceptedResponseTypes = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS}
		}
		b, err := proto.Marshal(rr)
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/api/v1/read", bytes.NewReader(snappy.Encode(nil, b)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("X-Test-Scope", scope)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		var out []labels.Labels
		if streamed {
			cr := remote.NewChunkedReader(resp.Body, 1<<26, nil)
			for {
				var res prompb.ChunkedReadResponse
				if err := cr.NextProto(&res); err == io.EOF {
					break
				} else {
					require.NoError(t, err)
				}
				for _, s := range res.ChunkedSeries {
					out = append(out, s.ToLabels(&labels.ScratchBuilder{}, nil))
				}
			}
			return out
		}
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		raw, err := snappy.Decode(nil, body)
		require.NoError(t, err)
		var res prompb.ReadResponse
		require.NoError(t, proto.Unmarshal(raw, &res))
		for _, s := range res.Results[0].Timeseries {
			out = append(out, s.ToLabels(&labels.ScratchBuilder{}, nil))
		}
		return out
	}
	for _, streamed := range []bool{false, true} {
		t.Run(fmt.Sprintf("streamed=%v", streamed), func(t *testing.T) {
			all := read("*", streamed)
			require.Len(t, all, 5, "%v", all)
			got := read("eu-1", streamed)
			require.Len(t, got, 2, "%v", got)
			for _, ls := range got {
				require.Equal(t, "eu-1", ls.Get("cluster"), ls.String())
			}
		})
	}
}

var _ storage.ExemplarQueryable = access.NewExemplarQueryable(nil)
