package promrw

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/store/metrics"
)

const (
	tokenEU1 = "token-eu-1"
	tokenEU2 = "token-eu-2"
	ctV2     = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

type env struct {
	h     *Handler
	store *metrics.Store
	reg   *fleet.Registry
}

func newEnv(t testing.TB, fcfg *fleet.Config, pcfg pipeline.Config, rcfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	if fcfg == nil {
		fcfg = defaultFleet(t)
	}
	reg, err := fleet.NewRegistry(*fcfg)
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	st, err := metrics.Open(metrics.Config{Path: filepath.Join(dir, "data"), MaxExemplars: 1000}, nil, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	p, err := pipeline.New(pcfg, reg, st, st.Metadata(), nil, logger)
	require.NoError(t, err)
	h, err := NewHandler(rcfg, p, nil, logger)
	require.NoError(t, err)
	return &env{h: h, store: st, reg: reg}
}

// defaultFleet is eu-1 (token file, labels) and eu-2 (token env).
func defaultFleet(t testing.TB) *fleet.Config {
	f1 := filepath.Join(t.TempDir(), "eu-1.token")
	require.NoError(t, os.WriteFile(f1, []byte(tokenEU1+"\n"), 0o600))
	t.Setenv("FG_TEST_EU2", tokenEU2)
	return &fleet.Config{Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Region: "eu", Labels: map[string]string{"env": "prod"}, Credentials: fleet.Credentials{BearerTokenFile: f1}},
		{Name: "eu-2", Region: "eu", Credentials: fleet.Credentials{BearerTokenEnv: "FG_TEST_EU2"}},
	}}
}

func v1Body(t testing.TB, req *prompb.WriteRequest) []byte {
	b, err := req.Marshal()
	require.NoError(t, err)
	return snappy.Encode(nil, b)
}

func series(name string, extra ...string) []prompb.Label {
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(extra); i += 2 {
		ls = append(ls, prompb.Label{Name: extra[i], Value: extra[i+1]})
	}
	return ls
}

func (e *env) post(t testing.TB, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-protobuf")
	r.Header.Set("Content-Encoding", "snappy")
	for k, v := range hdr {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// selectAll returns every stored series as label strings with their float values.
func (e *env) selectAll(t testing.TB) map[string][]float64 {
	q, err := e.store.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	out := map[string][]float64{}
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		it = s.Iterator(it)
		var vals []float64
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt == chunkenc.ValFloat {
				_, v := it.At()
				vals = append(vals, v)
			} else {
				vals = append(vals, -1) // a histogram sample
			}
		}
		out[s.Labels().String()] = vals
	}
	require.NoError(t, ss.Err())
	return out
}

func TestRemoteWriteV1StatusCodes(t *testing.T) {
	good := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("http_requests_total", "job", "api"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}, {Timestamp: 2000, Value: 2}}},
	}}
	conflict := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("ok_metric", "job", "api"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
		{Labels: series("up", "cluster", "eu-2", "job", "api"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
	}}
	noName := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("", "job", "x")[1:], Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
	}}
	for _, tc := range []struct {
		name     string
		body     []byte
		hdr      map[string]string
		status   int
		contains string
		stored   int
	}{
		{"ok", v1Body(t, good), bearer(tokenEU1), 204, "", 1},
		{"missing token", v1Body(t, good), nil, 401, "no bearer token", 0},
		{"wrong token", v1Body(t, good), bearer("nope"), 401, "matches no cluster", 0},
		{"other cluster claimed", v1Body(t, conflict), bearer(tokenEU1), 400, `claims cluster "eu-2" but the credential proves cluster "eu-1"`, 0},
		{"same cluster claimed", v1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: series("up", "cluster", "eu-1"), Samples: []prompb.Sample{{Timestamp: 1, Value: 1}}}}}), bearer(tokenEU1), 204, "", 1},
		{"content type", v1Body(t, good), merge(bearer(tokenEU1), map[string]string{"Content-Type": "application/json"}), 415, "Content-Type", 0},
		{"proto param", v1Body(t, good), merge(bearer(tokenEU1), map[string]string{"Content-Type": "application/x-protobuf;proto=foo.Bar"}), 415, "proto", 0},
		{"encoding", v1Body(t, good), merge(bearer(tokenEU1), map[string]string{"Content-Encoding": "gzip"}), 415, "Content-Encoding", 0},
		{"not snappy", []byte("this is not snappy at all"), bearer(tokenEU1), 400, "snappy", 0},
		{"not protobuf", snappy.Encode(nil, []byte{0xff, 0xff, 0xff, 0xff}), bearer(tokenEU1), 400, "decoding remote-write 1.0", 0},
		{"no metric name", v1Body(t, noName), bearer(tokenEU1), 400, "no metric name", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, pipeline.Config{}, Config{})
			w := e.post(t, tc.body, tc.hdr)
			require.Equal(t, tc.status, w.Code, w.Body.String())
			require.Contains(t, w.Body.String(), tc.contains)
			require.Len(t, e.selectAll(t), tc.stored)
		})
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestRemoteWriteStampsIdentity(t *testing.T) {
	e := newEnv(t, nil, pipeline.Config{}, Config{})
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		// A sent region label is overwritten by the cluster's own.
		{Labels: series("up", "instance", "a:9090", "region", "us"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
	}}
	w := e.post(t, v1Body(t, req), bearer(tokenEU1))
	require.Equal(t, 204, w.Code, w.Body.String())
	got := e.selectAll(t)
	require.Equal(t, map[string][]float64{`{__name__="up", cluster="eu-1", env="prod", instance="a:9090", region="eu"}`: {1}}, got)

	st := e.reg.Get("eu-1").Status(e.reg.Get("eu-1").LastWrite())
	require.EqualValues(t, 1, st.Samples)
	require.EqualValues(t, 1, st.Series)
	require.True(t, st.Verified)
}

func TestRemoteWriteOverwritePolicy(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "tok")
	require.NoError(t, os.WriteFile(f, []byte(tokenEU1), 0o600))
	e := newEnv(t, &fleet.Config{OnConflict: fleet.ConflictOverwrite, Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenFile: f}},
	}}, pipeline.Config{}, Config{})
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("up", "cluster", "eu-2"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
	}}
	w := e.post(t, v1Body(t, req), bearer(tokenEU1))
	require.Equal(t, 204, w.Code, w.Body.String())
	require.Equal(t, map[string][]float64{`{__name__="up", cluster="eu-1"}`: {1}}, e.selectAll(t))
}

func TestRemoteWriteDevMode(t *testing.T) {
	e := newEnv(t, &fleet.Config{}, pipeline.Config{}, Config{})
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("up", "cluster", "lab-a"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
		{Labels: series("up", "job", "x"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 2}}},
	}}
	w := e.post(t, v1Body(t, req), nil)
	require.Equal(t, 204, w.Code, w.Body.String())
	require.Equal(t, map[string][]float64{
		`{__name__="up", cluster="lab-a"}`:            {1},
		`{__name__="up", cluster="default", job="x"}`: {2},
	}, e.selectAll(t))
	require.False(t, e.reg.Get("lab-a").Verified)

	// The header names the cluster of data without one.
	req = &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: series("up", "job", "y"), Samples: []prompb.Sample{{Timestamp: 1000, Value: 3}}}}}
	w = e.post(t, v1Body(t, req), map[string]string{fleet.DevHeader: "lab-b"})
	require.Equal(t, 204, w.Code, w.Body.String())
	require.Contains(t, e.selectAll(t), `{__name__="up", cluster="lab-b", job="y"}`)
	names := []string{}
	for _, s := range e.reg.Statuses() {
		names = append(names, s.Name)
	}
	require.Equal(t, []string{"default", "lab-a", "lab-b"}, names)
}

func TestRemoteWriteLimits(t *testing.T) {
	req := &prompb.WriteRequest{}
	for i := 0; i < 5; i++ {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels:  series("m", "i", strings.Repeat("x", i+1)),
			Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}},
		})
	}
	t.Run("series per request", func(t *testing.T) {
		e := newEnv(t, nil, pipeline.Config{MaxSeriesPerRequest: 4}, Config{})
		w := e.post(t, v1Body(t, req), bearer(tokenEU1))
		require.Equal(t, 413, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), "max_series_per_request")
		require.Empty(t, e.selectAll(t))
	})
	t.Run("request bytes", func(t *testing.T) {
		e := newEnv(t, nil, pipeline.Config{}, Config{MaxRequestBytes: 20})
		w := e.post(t, v1Body(t, req), bearer(tokenEU1))
		require.Equal(t, 413, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), "max_request_bytes")
	})
	t.Run("decoded bytes", func(t *testing.T) {
		e := newEnv(t, nil, pipeline.Config{}, Config{MaxDecodedBytes: 20})
		w := e.post(t, v1Body(t, req), bearer(tokenEU1))
		require.Equal(t, 413, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), "max_decoded_bytes")
	})
	t.Run("label value length", func(t *testing.T) {
		fc := defaultFleet(t)
		fc.Limits = &fleet.Limits{MaxLabelValueLength: 3}
		e := newEnv(t, fc, pipeline.Config{}, Config{})
		w := e.post(t, v1Body(t, req), bearer(tokenEU1))
		require.Equal(t, 400, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), "longer than limits.max_label_value_length (3)")
		require.Len(t, e.selectAll(t), 3, "the valid series are kept, like Prometheus's receiver")
	})
}

func TestRemoteWriteOutOfOrderIs400(t *testing.T) {
	e := newEnv(t, nil, pipeline.Config{}, Config{})
	w := e.post(t, v1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("m"), Samples: []prompb.Sample{{Timestamp: 5000, Value: 1}}},
	}}), bearer(tokenEU1))
	require.Equal(t, 204, w.Code)
	w = e.post(t, v1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("m"), Samples: []prompb.Sample{{Timestamp: 4000, Value: 2}}},
		{Labels: series("n"), Samples: []prompb.Sample{{Timestamp: 4000, Value: 3}}},
	}}), bearer(tokenEU1))
	require.Equal(t, 400, w.Code, w.Body.String())
	require.Contains(t, w.Body.String(), `{__name__="m", cluster="eu-1", env="prod", region="eu"}`)
	require.Contains(t, w.Body.String(), "out of order")
	require.Equal(t, map[string][]float64{
		`{__name__="m", cluster="eu-1", env="prod", region="eu"}`: {1},
		`{__name__="n", cluster="eu-1", env="prod", region="eu"}`: {3},
	}, e.selectAll(t))
	require.EqualValues(t, 1, e.reg.Get("eu-1").Status(e.reg.Get("eu-1").LastWrite()).Rejections["out_of_order"])
}

func v2Body(t testing.TB, req *writev2.Request) []byte {
	b, err := req.Marshal()
	require.NoError(t, err)
	return snappy.Encode(nil, b)
}

func TestRemoteWriteV2(t *testing.T) {
	e := newEnv(t, nil, pipeline.Config{}, Config{})
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	req.Timeseries = append(req.Timeseries, writev2.TimeSeries{
		LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "rpc_total", "job", "api"), nil),
		Samples:    []writev2.Sample{{Value: 1, Timestamp: 1000}, {Value: 2, Timestamp: 2000}},
		Exemplars:  []writev2.Exemplar{{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("trace_id", "abc"), nil), Value: 2, Timestamp: 2000}},
		Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("RPCs served.")},
	})
	req.Symbols = st.Symbols()
	w := e.post(t, v2Body(t, req), merge(bearer(tokenEU1), map[string]string{"Content-Type": ctV2}))
	require.Equal(t, 204, w.Code, w.Body.String())
	require.Equal(t, "2", w.Header().Get(headerSamplesWritten))
	require.Equal(t, "0", w.Header().Get(headerHistogramsWritten))
	require.Equal(t, "1", w.Header().Get(headerExemplarsWritten))
	require.Equal(t, map[string][]float64{`{__name__="rpc_total", cluster="eu-1", env="prod", job="api", region="eu"}`: {1, 2}}, e.selectAll(t))
	md := e.store.Metadata().List("rpc_total", -1, -1)
	require.Equal(t, "RPCs served.", md["rpc_total"][0].Help)

	// A bad symbol reference is a 400 naming the series; headers still present.
	bad := &writev2.Request{Symbols: []string{""}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{7, 9}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}}}}
	w = e.post(t, v2Body(t, bad), merge(bearer(tokenEU1), map[string]string{"Content-Type": ctV2}))
	require.Equal(t, 400, w.Code, w.Body.String())
	require.Equal(t, "0", w.Header().Get(headerSamplesWritten))

	// Identity conflicts in 2.0 store nothing too.
	st2 := writev2.NewSymbolTable()
	conflict := &writev2.Request{Timeseries: []writev2.TimeSeries{
		{LabelsRefs: st2.SymbolizeLabels(labels.FromStrings("__name__", "x"), nil), Samples: []writev2.Sample{{Value: 1, Timestamp: 3000}}},
		{LabelsRefs: st2.SymbolizeLabels(labels.FromStrings("__name__", "y", "cluster", "eu-2"), nil), Samples: []writev2.Sample{{Value: 1, Timestamp: 3000}}},
	}}
	conflict.Symbols = st2.Symbols()
	w = e.post(t, v2Body(t, conflict), merge(bearer(tokenEU1), map[string]string{"Content-Type": ctV2}))
	require.Equal(t, 400, w.Code, w.Body.String())
	require.Contains(t, w.Body.String(), `claims cluster "eu-2"`)
	require.Len(t, e.selectAll(t), 1)
}

func TestRemoteWriteHistogramsAndMetadataV1(t *testing.T) {
	e := newEnv(t, nil, pipeline.Config{}, Config{})
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{{
			Labels: series("latency_seconds"),
			Histograms: []prompb.Histogram{{
				Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1.5, Schema: 0, ZeroThreshold: 1e-128,
				ZeroCount:     &prompb.Histogram_ZeroCountInt{ZeroCountInt: 0},
				PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{1, 1},
				Timestamp: 1000,
			}},
		}},
		Metadata: []prompb.MetricMetadata{{MetricFamilyName: "latency_seconds", Type: prompb.MetricMetadata_HISTOGRAM, Help: "Latency."}},
	}
	w := e.post(t, v1Body(t, req), bearer(tokenEU1))
	require.Equal(t, 204, w.Code, w.Body.String())
	require.Equal(t, map[string][]float64{`{__name__="latency_seconds", cluster="eu-1", env="prod", region="eu"}`: {-1}}, e.selectAll(t))
	require.Equal(t, "histogram", string(e.store.Metadata().List("", -1, -1)["latency_seconds"][0].Type))

	// An invalid histogram (count below its buckets) is a 400.
	req.Timeseries[0].Histograms[0].Timestamp = 2000
	req.Timeseries[0].Histograms[0].Count = &prompb.Histogram_CountInt{CountInt: 1}
	w = e.post(t, v1Body(t, req), bearer(tokenEU1))
	require.Equal(t, 400, w.Code, w.Body.String())
}

var _ storage.AppendableV2 = (*metrics.Store)(nil)
