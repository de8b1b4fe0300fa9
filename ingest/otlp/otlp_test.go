package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	prw "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/store/logs"
	"github.com/fleetgate/fleetgate/store/traces"
)

// capture is an in-memory AppendableV2 recording committed float samples.
type capture struct {
	mu      sync.Mutex
	samples map[string][]float64 // label string -> values
}

type captureApp struct {
	c       *capture
	pending []struct {
		ls string
		v  float64
	}
}

func (c *capture) AppenderV2(context.Context) storage.AppenderV2 { return &captureApp{c: c} }

func (a *captureApp) Append(_ storage.SeriesRef, ls labels.Labels, _, _ int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AOptions) (storage.SeriesRef, error) {
	if h != nil || fh != nil {
		v = -1
	}
	a.pending = append(a.pending, struct {
		ls string
		v  float64
	}{ls.String(), v})
	return 1, nil
}

func (a *captureApp) Commit() error {
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	for _, p := range a.pending {
		a.c.samples[p.ls] = append(a.c.samples[p.ls], p.v)
	}
	return nil
}
func (a *captureApp) Rollback() error { a.pending = nil; return nil }

func (c *capture) snapshot() map[string][]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]float64{}
	for k, v := range c.samples {
		out[k] = append([]float64(nil), v...)
	}
	return out
}

type env struct {
	rc     *Receiver
	sig    *logtrace.Hub
	sink   *capture
	logs   *logs.Store
	traces *traces.Store
	srv    *httptest.Server
	grpc   *grpc.ClientConn
}

func newEnv(t testing.TB, pcfg pipeline.Config, scfg ...logtrace.Config) *env {
	return newEnvLimits(t, fleet.DefaultLimits(), pcfg, scfg...)
}

func newEnvLimits(t testing.TB, lim fleet.Limits, pcfg pipeline.Config, scfg ...logtrace.Config) *env {
	return newEnvFleet(t, func(fc *fleet.Config) { fc.Limits = &lim }, pcfg, scfg...)
}

// newEnvFleet is eu-1 and us-1; fleetCfg may change their config.
func newEnvFleet(t testing.TB, fleetCfg func(*fleet.Config), pcfg pipeline.Config, scfg ...logtrace.Config) *env {
	t.Setenv("FG_OTLP_TOKEN_EU1", "tok-eu-1")
	t.Setenv("FG_OTLP_TOKEN_US1", "tok-us-1")
	fc := fleet.Config{Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Region: "eu-west-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_OTLP_TOKEN_EU1"}},
		{Name: "us-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_OTLP_TOKEN_US1"}},
	}}
	fleetCfg(&fc)
	reg, err := fleet.NewRegistry(fc)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sink := &capture{samples: map[string][]float64{}}
	pipe, err := pipeline.New(pcfg, reg, sink, nil, nil, logger)
	require.NoError(t, err)
	dir := t.TempDir()
	ls, err := logs.Open(dir, logs.Config{}, nil, logger)
	require.NoError(t, err)
	ts, err := traces.Open(dir, traces.Config{}, nil, logger)
	require.NoError(t, err)
	var sc logtrace.Config
	if len(scfg) > 0 {
		sc = scfg[0]
	}
	sig, err := logtrace.New(sc, reg, pipe, []logtrace.LogsSink{ls}, []logtrace.TracesSink{ts}, nil, logger)
	require.NoError(t, err)
	rc, err := New(Config{}, pipe, sig, nil, logger)
	require.NoError(t, err)
	mux := http.NewServeMux()
	rc.Register(mux)
	srv := httptest.NewServer(mux)
	gs := grpc.NewServer(rc.ServerOptions()...)
	rc.RegisterGRPC(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		srv.Close()
		ls.Close()
		ts.Close()
	})
	return &env{rc: rc, sig: sig, sink: sink, logs: ls, traces: ts, srv: srv, grpc: cc}
}

func testMetrics(now time.Time) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "checkout")
	rm.Resource().Attributes().PutStr("service.instance.id", "pod-1")
	rm.Resource().Attributes().PutStr("k8s.namespace.name", "shop")
	sm := rm.ScopeMetrics().AppendEmpty()
	g := sm.Metrics().AppendEmpty()
	g.SetName("queue.depth")
	g.SetUnit("{items}")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(now))
	dp.SetDoubleValue(7)
	dp.Attributes().PutStr("queue", "orders")
	s := sm.Metrics().AppendEmpty()
	s.SetName("http.server.requests")
	sum := s.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	sdp := sum.DataPoints().AppendEmpty()
	sdp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Minute)))
	sdp.SetTimestamp(pcommon.NewTimestampFromTime(now))
	sdp.SetIntValue(42)
	h := sm.Metrics().AppendEmpty()
	h.SetName("http.server.duration")
	h.SetUnit("s")
	hist := h.SetEmptyHistogram()
	hist.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	hdp := hist.DataPoints().AppendEmpty()
	hdp.SetTimestamp(pcommon.NewTimestampFromTime(now))
	hdp.SetCount(3)
	hdp.SetSum(0.6)
	hdp.ExplicitBounds().FromRaw([]float64{0.1, 0.5})
	hdp.BucketCounts().FromRaw([]uint64{1, 1, 1})
	return md
}

// expected translates md with Prometheus's converter and the receiver's
// settings, after the identity stamp, and adds the pipeline's stamp labels.
func expected(t *testing.T, rc *Receiver, md pmetric.Metrics) map[string][]float64 {
	md2 := pmetric.NewMetrics()
	md.CopyTo(md2)
	for i := range md2.ResourceMetrics().Len() {
		attrs := md2.ResourceMetrics().At(i).Resource().Attributes()
		attrs.PutStr("cluster", "eu-1")
		attrs.PutStr("region", "eu-west-1")
		attrs.PutStr("k8s.cluster.name", "eu-1")
	}
	c := &capture{samples: map[string][]float64{}}
	app := c.AppenderV2(context.Background())
	conv := prw.NewPrometheusConverter(app)
	_, err := conv.FromMetrics(context.Background(), md2, rc.settings)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	out := map[string][]float64{}
	for k, v := range c.samples {
		ls, err := labelsParse(k)
		require.NoError(t, err)
		b := labels.NewBuilder(ls)
		b.Set("cluster", "eu-1")
		b.Set("region", "eu-west-1")
		out[b.Labels().String()] = v
	}
	return out
}

func labelsParse(s string) (labels.Labels, error) {
	// labels.String output: {a="b", c="d"}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	var kv []string
	for _, part := range splitTop(s) {
		k, v, _ := strings.Cut(part, "=")
		uq, err := unquote(v)
		if err != nil {
			return labels.EmptyLabels(), err
		}
		kv = append(kv, strings.Trim(k, `"`), uq)
	}
	return labels.FromStrings(kv...), nil
}

func splitTop(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQ = !inQ
		case ',':
			if !inQ {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if strings.TrimSpace(s[start:]) != "" {
		out = append(out, strings.TrimSpace(s[start:]))
	}
	return out
}

func unquote(v string) (string, error) {
	var out string
	_, err := fmt.Sscanf(v, "%q", &out)
	return out, err
}

func post(t *testing.T, url, token, ctype, cenc string, body []byte) (*http.Response, []byte) {
	if cenc == "gzip" {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		require.NoError(t, zw.Close())
		body = buf.Bytes()
	}
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ctype)
	if cenc != "" {
		req.Header.Set("Content-Encoding", cenc)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type encoder interface {
	MarshalProto() ([]byte, error)
	MarshalJSON() ([]byte, error)
}

func encode(t *testing.T, req encoder, format string) (string, []byte) {
	if format == "json" {
		b, err := req.MarshalJSON()
		require.NoError(t, err)
		return "application/json", b
	}
	b, err := req.MarshalProto()
	require.NoError(t, err)
	return "application/x-protobuf", b
}

var encodings = []struct{ format, cenc string }{{"proto", ""}, {"proto", "gzip"}, {"json", ""}, {"json", "gzip"}}

func TestMetricsHTTPRoundTrip(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc.format+enc.cenc, func(t *testing.T) {
			e := newEnv(t, pipeline.Config{})
			md := testMetrics(time.Now())
			want := expected(t, e.rc, md)
			ctype, body := encode(t, pmetricotlp.NewExportRequestFromMetrics(md), enc.format)
			resp, out := post(t, e.srv.URL+"/v1/metrics", "tok-eu-1", ctype, enc.cenc, body)
			require.Equal(t, 200, resp.StatusCode, string(out))
			require.Equal(t, ctype, resp.Header.Get("Content-Type"))
			er := pmetricotlp.NewExportResponse()
			if enc.format == "json" {
				require.NoError(t, er.UnmarshalJSON(out))
			} else {
				require.NoError(t, er.UnmarshalProto(out))
			}
			require.Zero(t, er.PartialSuccess().RejectedDataPoints())
			got := e.sink.snapshot()
			require.Equal(t, want, got)
			require.Contains(t, got, `{__name__="queue_depth", cluster="eu-1", k8s_namespace_name="shop", queue="orders", region="eu-west-1"}`[:0]+keyWith(got, "queue_depth"))
			require.Contains(t, keys(got), `{__name__="http_server_requests_total", cluster="eu-1", instance="pod-1", job="checkout", region="eu-west-1"}`)
		})
	}
}

func keys(m map[string][]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keyWith(m map[string][]float64, sub string) string {
	for k := range m {
		if strings.Contains(k, sub) {
			return k
		}
	}
	return ""
}

func TestMetricsPartialSuccessAndErrors(t *testing.T) {
	lim := fleet.DefaultLimits()
	lim.MaxLabelValueLength = 40
	e := newEnvLimits(t, lim, pipeline.Config{})
	md := testMetrics(time.Now())
	dp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0)
	dp.Attributes().PutStr("queue", strings.Repeat("x", 100))
	_, body := encode(t, pmetricotlp.NewExportRequestFromMetrics(md), "proto")
	resp, out := post(t, e.srv.URL+"/v1/metrics", "tok-eu-1", "application/x-protobuf", "", body)
	require.Equal(t, 200, resp.StatusCode)
	er := pmetricotlp.NewExportResponse()
	require.NoError(t, er.UnmarshalProto(out))
	require.EqualValues(t, 1, er.PartialSuccess().RejectedDataPoints())
	require.Contains(t, er.PartialSuccess().ErrorMessage(), "queue_depth")
	require.NotEmpty(t, keyWith(e.sink.snapshot(), "http_server_requests_total"))

	// Non-retryable errors carry a google.rpc.Status naming the problem.
	conflict := testMetrics(time.Now())
	conflict.ResourceMetrics().At(0).Resource().Attributes().PutStr("k8s.cluster.name", "us-1")
	_, cbody := encode(t, pmetricotlp.NewExportRequestFromMetrics(conflict), "proto")
	for _, tc := range []struct {
		name, token, ctype, cenc string
		body                     []byte
		status                   int
		msg                      string
	}{
		{"unauthenticated", "", "application/x-protobuf", "", body, 401, "no bearer token"},
		{"conflict", "tok-eu-1", "application/x-protobuf", "", cbody, 400, `k8s.cluster.name="us-1" claims another cluster`},
		{"garbage", "tok-eu-1", "application/x-protobuf", "", []byte("\xff\xff\xff"), 400, "decoding OTLP protobuf"},
		{"bad json", "tok-eu-1", "application/json", "", []byte("{"), 400, "decoding OTLP JSON"},
		{"content type", "tok-eu-1", "text/plain", "", body, 415, "Content-Type"},
		{"encoding", "tok-eu-1", "application/x-protobuf", "zstd", body, 415, "Content-Encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, e.srv.URL+"/v1/metrics", tc.token, tc.ctype, tc.cenc, tc.body)
			require.Equal(t, tc.status, resp.StatusCode)
			var st spb.Status
			if tc.ctype == "application/json" {
				require.NoError(t, protojson.Unmarshal(out, &st))
				require.Contains(t, st.Message, tc.msg)
			} else if tc.status != 415 {
				require.NoError(t, proto.Unmarshal(out, &st))
				require.Contains(t, st.Message, tc.msg)
			}
		})
	}
}

func testLogs(now time.Time) plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "checkout")
	rl.Resource().Attributes().PutStr("k8s.namespace.name", "shop")
	rl.Resource().Attributes().PutStr("host.name", "node-1")
	lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	lr.SetTimestamp(pcommon.NewTimestampFromTime(now))
	lr.Body().SetStr("payment failed for order 17")
	lr.SetSeverityText("ERROR")
	lr.Attributes().PutStr("order.id", "17")
	lr.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	return ld
}

func storedLogs(t *testing.T, st *logs.Store) map[string][]push.Entry {
	got := map[string][]push.Entry{}
	require.NoError(t, st.Select(context.Background(), 0, time.Now().Add(time.Hour).UnixNano(),
		[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "cluster", "eu-1")}, false,
		func(_ labels.Labels, lstr string, e *push.Entry) error {
			got[lstr] = append(got[lstr], *e)
			return nil
		}))
	return got
}

func TestLogsRoundTrip(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	for _, enc := range encodings {
		t.Run(enc.format+enc.cenc, func(t *testing.T) {
			e := newEnv(t, pipeline.Config{})
			ctype, body := encode(t, plogotlp.NewExportRequestFromLogs(testLogs(now)), enc.format)
			resp, out := post(t, e.srv.URL+"/v1/logs", "tok-eu-1", ctype, enc.cenc, body)
			require.Equal(t, 200, resp.StatusCode, string(out))
			got := storedLogs(t, e.logs)
			want := `{cluster="eu-1", k8s_cluster_name="eu-1", k8s_namespace_name="shop", region="eu-west-1", service_name="checkout"}`
			require.Contains(t, got, want, "%v", got)
			en := got[want][0]
			require.True(t, now.Equal(en.Timestamp))
			require.Equal(t, "payment failed for order 17", en.Line)
			require.Equal(t, push.LabelsAdapter{{Name: "host_name", Value: "node-1"}, {Name: "order_id", Value: "17"},
				{Name: "severity_text", Value: "ERROR"}, {Name: "trace_id", Value: "0102030405060708090a0b0c0d0e0f10"}}, en.StructuredMetadata)
		})
	}
}

func testTraces(now time.Time, id pcommon.TraceID) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	root := spans.AppendEmpty()
	root.SetTraceID(id)
	root.SetSpanID(pcommon.SpanID{1})
	root.SetName("POST /pay")
	root.SetKind(ptrace.SpanKindServer)
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(30 * time.Millisecond)))
	root.Status().SetCode(ptrace.StatusCodeError)
	child := spans.AppendEmpty()
	child.SetTraceID(id)
	child.SetSpanID(pcommon.SpanID{2})
	child.SetParentSpanID(pcommon.SpanID{1})
	child.SetName("SELECT orders")
	child.SetKind(ptrace.SpanKindClient)
	child.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	child.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(5 * time.Millisecond)))
	child.Attributes().PutStr("db.system", "postgresql")
	return td
}

func TestTracesRoundTripAndREDMetrics(t *testing.T) {
	now := time.Now()
	for i, enc := range encodings {
		t.Run(enc.format+enc.cenc, func(t *testing.T) {
			e := newEnv(t, pipeline.Config{})
			id := pcommon.TraceID{byte(i + 1), 9}
			sent := testTraces(now, id)
			ctype, body := encode(t, ptraceotlp.NewExportRequestFromTraces(sent), enc.format)
			resp, out := post(t, e.srv.URL+"/v1/traces", "tok-eu-1", ctype, enc.cenc, body)
			require.Equal(t, 200, resp.StatusCode, string(out))
			got, err := e.traces.Trace(context.Background(), id)
			require.NoError(t, err)
			require.Equal(t, 2, got.SpanCount())
			attrs := got.ResourceSpans().At(0).Resource().Attributes()
			v, _ := attrs.Get("k8s.cluster.name")
			require.Equal(t, "eu-1", v.AsString())
			v, _ = attrs.Get("cluster")
			require.Equal(t, "eu-1", v.AsString())
			// The stored spans equal the sent ones.
			require.Equal(t, sent.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1).Attributes().AsRaw(),
				got.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1).Attributes().AsRaw())

			res, err := e.traces.Search(context.Background(), now.Add(-time.Minute).UnixMilli(), now.Add(time.Minute).UnixMilli(),
				[]traces.Condition{{Tag: "resource.service.name", Value: "checkout"}, {Tag: "status", Value: "error"}}, 10)
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.Equal(t, "POST /pay", res[0].RootTraceName)

			require.NoError(t, e.sig.Flush(context.Background(), time.Now()))
			m := e.sink.snapshot()
			require.Equal(t, []float64{1}, m[`{__name__="traces_span_metrics_calls_total", cluster="eu-1", region="eu-west-1", service_name="checkout", span_kind="SPAN_KIND_SERVER", span_name="POST /pay", status_code="STATUS_CODE_ERROR"}`], "%v", keys(m))
			require.Equal(t, []float64{1}, m[`{__name__="traces_span_metrics_duration_seconds_bucket", cluster="eu-1", le="0.05", region="eu-west-1", service_name="checkout", span_kind="SPAN_KIND_SERVER", span_name="POST /pay", status_code="STATUS_CODE_ERROR"}`])
			require.Equal(t, []float64{0}, m[`{__name__="traces_span_metrics_duration_seconds_bucket", cluster="eu-1", le="0.01", region="eu-west-1", service_name="checkout", span_kind="SPAN_KIND_SERVER", span_name="POST /pay", status_code="STATUS_CODE_ERROR"}`])
		})
	}
}

func TestGRPC(t *testing.T) {
	e := newEnv(t, pipeline.Config{})
	now := time.Now()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok-eu-1")
	_, err := pmetricotlp.NewGRPCClient(e.grpc).Export(ctx, pmetricotlp.NewExportRequestFromMetrics(testMetrics(now)))
	require.NoError(t, err)
	require.NotEmpty(t, keyWith(e.sink.snapshot(), "queue_depth"))
	_, err = plogotlp.NewGRPCClient(e.grpc).Export(ctx, plogotlp.NewExportRequestFromLogs(testLogs(now)))
	require.NoError(t, err)
	require.Len(t, storedLogs(t, e.logs), 1)
	id := pcommon.TraceID{7, 7}
	_, err = ptraceotlp.NewGRPCClient(e.grpc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(testTraces(now, id)), grpc.UseCompressor(grpcgzip.Name))
	require.NoError(t, err)
	_, err = e.traces.Trace(context.Background(), id)
	require.NoError(t, err)

	// No token: Unauthenticated. Another cluster claimed: InvalidArgument (not retryable).
	_, err = ptraceotlp.NewGRPCClient(e.grpc).Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(testTraces(now, id)))
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	bad := testTraces(now, id)
	bad.ResourceSpans().At(0).Resource().Attributes().PutStr("cluster", "us-1")
	_, err = ptraceotlp.NewGRPCClient(e.grpc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(bad))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), `cluster="us-1"`)
}

func FuzzHTTPDecode(f *testing.F) {
	now := time.Unix(1700000000, 0)
	for _, r := range []encoder{
		pmetricotlp.NewExportRequestFromMetrics(testMetrics(now)),
		plogotlp.NewExportRequestFromLogs(testLogs(now)),
		ptraceotlp.NewExportRequestFromTraces(testTraces(now, pcommon.TraceID{1})),
	} {
		b, _ := r.MarshalProto()
		f.Add(b, uint8(0))
		j, _ := r.MarshalJSON()
		f.Add(j, uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, sel uint8) {
		enc := encoding(sel % 2)
		var req unmarshaler
		switch sel / 2 % 3 {
		case 0:
			req = pmetricotlp.NewExportRequest()
		case 1:
			req = plogotlp.NewExportRequest()
		default:
			req = ptraceotlp.NewExportRequest()
		}
		if err := unmarshal(req, body, enc); err != nil {
			require.Equal(t, 400, statusOf(err))
			return
		}
		switch r := req.(type) {
		case pmetricotlp.ExportRequest:
			_ = r.Metrics().DataPointCount()
		case plogotlp.ExportRequest:
			ld := r.Logs()
			rc := &Receiver{logIdx: map[string]string{"service.name": "service_name"}}
			_ = rc.logsToStreams(ld, nil)
		case ptraceotlp.ExportRequest:
			_ = splitForFuzz(r.Traces())
		}
	})
}

func splitForFuzz(td ptrace.Traces) int { return td.SpanCount() }

func TestLogsRateLimitIsRetryable(t *testing.T) {
	lim := fleet.DefaultLimits()
	lim.LogsRateBytes, lim.LogsBurstBytes = 1, 30
	e := newEnvLimits(t, lim, pipeline.Config{})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok-eu-1")
	req := plogotlp.NewExportRequestFromLogs(testLogs(time.Now()))
	_, err := plogotlp.NewGRPCClient(e.grpc).Export(ctx, req)
	require.NoError(t, err)
	_, err = plogotlp.NewGRPCClient(e.grpc).Export(ctx, req)
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code())
	require.Len(t, st.Details(), 1, "RetryInfo makes RESOURCE_EXHAUSTED retryable for OTLP exporters")
	_, body := encode(t, req, "proto")
	resp, _ := post(t, e.srv.URL+"/v1/logs", "tok-eu-1", "application/x-protobuf", "", body)
	require.Equal(t, 429, resp.StatusCode)
	// The bucket refills at 1 byte/s: Retry-After is when the push fits.
	after, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Greater(t, after, 1)
}
