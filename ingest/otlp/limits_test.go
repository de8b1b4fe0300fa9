package otlp

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/errdetails"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// fill puts n attributes on m.
func fill(m pcommon.Map, n int) {
	raw := make(map[string]any, n)
	for i := range n {
		raw["attr."+strconv.Itoa(i)] = "v"
	}
	_ = m.FromRaw(raw)
}

// export sends a request over OTLP/HTTP and OTLP/gRPC; it returns the HTTP
// status and google.rpc.Status message, and the gRPC error.
func (e *env) export(t *testing.T, token string, req any) (int, string, error) {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	var (
		path string
		body []byte
		gerr error
	)
	switch r := req.(type) {
	case pmetric.Metrics:
		cp := pmetric.NewMetrics()
		r.CopyTo(cp)
		_, body = encode(t, pmetricotlp.NewExportRequestFromMetrics(r), "proto")
		path = "/v1/metrics"
		_, gerr = pmetricotlp.NewGRPCClient(e.grpc).Export(ctx, pmetricotlp.NewExportRequestFromMetrics(cp))
	case plog.Logs:
		cp := plog.NewLogs()
		r.CopyTo(cp)
		_, body = encode(t, plogotlp.NewExportRequestFromLogs(r), "proto")
		path = "/v1/logs"
		_, gerr = plogotlp.NewGRPCClient(e.grpc).Export(ctx, plogotlp.NewExportRequestFromLogs(cp))
	case ptrace.Traces:
		cp := ptrace.NewTraces()
		r.CopyTo(cp)
		_, body = encode(t, ptraceotlp.NewExportRequestFromTraces(r), "proto")
		path = "/v1/traces"
		_, gerr = ptraceotlp.NewGRPCClient(e.grpc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(cp))
	}
	resp, out := post(t, e.srv.URL+path, token, "application/x-protobuf", "", body)
	msg := ""
	if resp.StatusCode != 200 {
		var st rpcstatus.Status
		require.NoError(t, proto.Unmarshal(out, &st))
		msg = st.Message
	}
	return resp.StatusCode, msg, gerr
}

// Attribute counts are checked in pdata before stamping and translation:
// 400 / InvalidArgument naming the resource or point and the limit.
func TestAttributeLimits(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		req  func() any
		msg  string
	}{
		{"metrics resource", func() any {
			md := testMetrics(now)
			fill(md.ResourceMetrics().At(0).Resource().Attributes(), 129)
			return md
		}, `resource 0 (service.name "unknown_service") has 129 attributes, more than limits.max_otlp_resource_attributes (128)`},
		{"data point", func() any {
			md := testMetrics(now)
			fill(md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(2).Histogram().DataPoints().At(0).Attributes(), 129)
			return md
		}, `data point 0 of metric "http.server.duration" (service "checkout") has 129 attributes, more than limits.max_otlp_attributes (128)`},
		{"metric scope", func() any {
			md := testMetrics(now)
			md.ResourceMetrics().At(0).ScopeMetrics().At(0).Scope().SetName("lib")
			fill(md.ResourceMetrics().At(0).ScopeMetrics().At(0).Scope().Attributes(), 200)
			return md
		}, `scope "lib" of service "checkout" has 200 attributes, more than limits.max_otlp_attributes (128)`},
		{"logs resource", func() any {
			ld := testLogs(now)
			fill(ld.ResourceLogs().At(0).Resource().Attributes(), 129)
			return ld
		}, `limits.max_otlp_resource_attributes (128)`},
		{"log record", func() any {
			ld := testLogs(now)
			fill(ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes(), 129)
			return ld
		}, `log record 0 of scope "" (service "checkout") has 129 attributes, more than limits.max_otlp_attributes (128)`},
		{"traces resource", func() any {
			td := testTraces(now, pcommon.TraceID{1})
			fill(td.ResourceSpans().At(0).Resource().Attributes(), 1000)
			return td
		}, `has 1000 attributes, more than limits.max_otlp_resource_attributes (128)`},
		{"span", func() any {
			td := testTraces(now, pcommon.TraceID{1})
			fill(td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1).Attributes(), 129)
			return td
		}, `span "SELECT orders" (trace 01000000000000000000000000000000, service "checkout") has 129 attributes, more than limits.max_otlp_attributes (128)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pipeline.Config{})
			code, msg, gerr := e.export(t, "tok-eu-1", tc.req())
			require.Equal(t, 400, code, msg)
			require.Contains(t, msg, tc.msg)
			require.Equal(t, codes.InvalidArgument, status.Code(gerr))
			require.Contains(t, status.Convert(gerr).Message(), tc.msg)
			require.Empty(t, e.sink.snapshot())
			require.NotZero(t, e.rc.sig.Registry().Get("eu-1").Status(now).Rejections["limit"])
		})
	}
	// 0 is unlimited.
	lim := fleet.DefaultLimits()
	lim.MaxOTLPResourceAttributes, lim.MaxOTLPAttributes = 0, 0
	e := newEnvLimits(t, lim, pipeline.Config{})
	md := testMetrics(now)
	fill(md.ResourceMetrics().At(0).Resource().Attributes(), 300)
	code, msg, gerr := e.export(t, "tok-eu-1", md)
	require.Equal(t, 200, code, msg)
	require.NoError(t, gerr)
}

// cluster and k8s.cluster.name on a scope, data point, log record or span
// naming another cluster are refused; the same cluster is fine; with
// identity.on_conflict: overwrite they are overwritten.
func TestIdentityAttributes(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name string
		req  func(v string) any
		msg  string
	}{
		{"metric scope", func(v string) any {
			md := testMetrics(now)
			md.ResourceMetrics().At(0).ScopeMetrics().At(0).Scope().Attributes().PutStr("cluster", v)
			return md
		}, `scope "" of service "checkout" has attribute cluster="us-1"`},
		{"data point", func(v string) any {
			md := testMetrics(now)
			md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0).Attributes().PutStr("k8s.cluster.name", v)
			return md
		}, `data point 0 of metric "queue.depth" (service "checkout") has attribute k8s.cluster.name="us-1"`},
		{"log record", func(v string) any {
			ld := testLogs(now)
			ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes().PutStr("cluster", v)
			return ld
		}, `log record 0 of scope "" (service "checkout") has attribute cluster="us-1"`},
		{"span", func(v string) any {
			td := testTraces(now, pcommon.TraceID{3})
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().PutStr("k8s.cluster.name", v)
			return td
		}, `span "POST /pay" (trace 03000000000000000000000000000000, service "checkout") has attribute k8s.cluster.name="us-1"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pipeline.Config{})
			code, msg, gerr := e.export(t, "tok-eu-1", tc.req("us-1"))
			require.Equal(t, 400, code, msg)
			require.Contains(t, msg, tc.msg)
			require.Contains(t, msg, `another cluster than the credential proves ("eu-1")`)
			require.Equal(t, codes.InvalidArgument, status.Code(gerr))
			require.NotZero(t, e.rc.sig.Registry().Get("eu-1").Status(now).Rejections["conflict"])

			code, msg, gerr = e.export(t, "tok-eu-1", tc.req("eu-1"))
			require.Equal(t, 200, code, "its own cluster: %s", msg)
			require.NoError(t, gerr)

			ov := newEnvFleet(t, func(fc *fleet.Config) { fc.OnConflict = fleet.ConflictOverwrite }, pipeline.Config{})
			req := tc.req("us-1")
			require.NoError(t, ov.rc.checkAndStampForTest(ov.rc.sig.Registry().Get("eu-1"), req))
			switch r := req.(type) {
			case pmetric.Metrics:
				require.NotContains(t, anyAttr(r.ResourceMetrics().At(0).ScopeMetrics().At(0).Scope().Attributes(),
					r.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0).Attributes()), "us-1")
			case plog.Logs:
				require.NotContains(t, anyAttr(r.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes()), "us-1")
			case ptrace.Traces:
				require.NotContains(t, anyAttr(r.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()), "us-1")
			}
		})
	}
}

// checkAndStampForTest runs the pre-translation checks of req's signal.
func (rc *Receiver) checkAndStampForTest(c *fleet.Cluster, req any) error {
	switch r := req.(type) {
	case pmetric.Metrics:
		return rc.stampMetrics(c, r)
	case plog.Logs:
		_, err := rc.stampLogs(c, r)
		return err
	case ptrace.Traces:
		return rc.checkSpans(c, r)
	}
	return nil
}

func anyAttr(ms ...pcommon.Map) []string {
	var out []string
	for _, m := range ms {
		for _, k := range []string{"cluster", "k8s.cluster.name"} {
			if v, ok := m.Get(k); ok {
				out = append(out, v.AsString())
			}
		}
	}
	return out
}

// Log records and spans out of the time bounds are refused with 400 naming
// the stream or span and the bound; data points in the future are rejected
// (partial success) and never stored.
func TestOTLPTimeBounds(t *testing.T) {
	now := time.Now()
	ts := func(d time.Duration) pcommon.Timestamp { return pcommon.NewTimestampFromTime(now.Add(d)) }
	for _, tc := range []struct {
		name string
		req  func() any
		msg  string
	}{
		{"log in the future", func() any {
			ld := testLogs(now)
			ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).SetTimestamp(ts(time.Hour))
			return ld
		}, "is more than ingest.max_future (10m) ahead of now"},
		{"log older than the log store", func() any {
			ld := testLogs(now)
			ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).SetTimestamp(ts(-8 * 24 * time.Hour))
			return ld
		}, "is older than logs_storage.retention (1w)"},
		{"span starting in the future", func() any {
			td := testTraces(now, pcommon.TraceID{5})
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetStartTimestamp(ts(time.Hour))
			return td
		}, `span {service_name="checkout", span_id="0100000000000000", span_name="POST /pay", trace_id="05000000000000000000000000000000"}: start timestamp`},
		{"span ending in 2262", func() any {
			td := testTraces(now, pcommon.TraceID{5})
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1).SetEndTimestamp(pcommon.Timestamp(1<<64 - 1))
			return td
		}, "end timestamp 2262-04-11T23:47:16.854775807Z is more than ingest.max_future (10m) ahead of now"},
		{"span without a start", func() any {
			td := testTraces(now, pcommon.TraceID{5})
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetStartTimestamp(0)
			return td
		}, "start timestamp 1970-01-01T00:00:00Z (0 ns) is not after 1970-01-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pipeline.Config{}, logtrace.Config{LogsMaxAge: 7 * 24 * time.Hour, TracesMaxAge: 3 * 24 * time.Hour})
			code, msg, gerr := e.export(t, "tok-eu-1", tc.req())
			require.Equal(t, 400, code, msg)
			require.Contains(t, msg, tc.msg)
			require.Equal(t, codes.InvalidArgument, status.Code(gerr))
		})
	}

	e := newEnv(t, pipeline.Config{})
	md := testMetrics(now)
	md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0).SetTimestamp(ts(time.Hour))
	_, body := encode(t, pmetricotlp.NewExportRequestFromMetrics(md), "proto")
	resp, out := post(t, e.srv.URL+"/v1/metrics", "tok-eu-1", "application/x-protobuf", "", body)
	require.Equal(t, 200, resp.StatusCode)
	er := pmetricotlp.NewExportResponse()
	require.NoError(t, er.UnmarshalProto(out))
	// The point, and the target_info samples the translator makes up to it.
	require.GreaterOrEqual(t, er.PartialSuccess().RejectedDataPoints(), int64(1))
	require.Contains(t, er.PartialSuccess().ErrorMessage(), `series {__name__="queue_depth"`)
	require.Contains(t, er.PartialSuccess().ErrorMessage(), "ingest.max_future (10m)")
	require.Empty(t, keyWith(e.sink.snapshot(), "queue_depth"), "the future point is not stored")
	require.NotEmpty(t, keyWith(e.sink.snapshot(), "http_server_requests_total"), "the others are")
}

// Over the ingestion rate: 429 with Retry-After over HTTP, and
// RESOURCE_EXHAUSTED with RetryInfo over gRPC, as the OTLP spec says.
func TestOTLPRateLimit(t *testing.T) {
	lim := fleet.DefaultLimits()
	lim.IngestionRate = 1 // burst 2; testMetrics has 3 data points
	e := newEnvLimits(t, lim, pipeline.Config{})
	code, msg, gerr := e.export(t, "tok-eu-1", testMetrics(time.Now()))
	require.Equal(t, 413, code, msg)
	require.Contains(t, msg, "more than its limits.ingestion_burst (2)")
	require.Equal(t, codes.InvalidArgument, status.Code(gerr))

	lim.IngestionRate = 0.1 // burst 1: the bucket is empty after one point
	e = newEnvLimits(t, lim, pipeline.Config{})
	md := pmetric.NewMetrics()
	g := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	g.SetName("one")
	g.SetEmptyGauge().DataPoints().AppendEmpty().SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	_, body := encode(t, pmetricotlp.NewExportRequestFromMetrics(md), "proto")
	resp, out := post(t, e.srv.URL+"/v1/metrics", "tok-eu-1", "application/x-protobuf", "", body)
	require.Equal(t, 200, resp.StatusCode, string(out))
	resp, _ = post(t, e.srv.URL+"/v1/metrics", "tok-eu-1", "application/x-protobuf", "", body)
	require.Equal(t, 429, resp.StatusCode)
	after, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, after, 9, "one point at 0.1/s")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok-eu-1")
	_, err = pmetricotlp.NewGRPCClient(e.grpc).Export(ctx, pmetricotlp.NewExportRequestFromMetrics(md))
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code())
	require.Len(t, st.Details(), 1)
	ri, ok := st.Details()[0].(*spb.RetryInfo)
	require.True(t, ok)
	require.GreaterOrEqual(t, ri.RetryDelay.AsDuration(), 9*time.Second)
	// us-1 has its own bucket.
	resp, _ = post(t, e.srv.URL+"/v1/metrics", "tok-us-1", "application/x-protobuf", "", body)
	require.Equal(t, 200, resp.StatusCode)
}

// Every metric type's data points are counted, and the message names the
// point's index.
func TestCheckPointsEveryMetricType(t *testing.T) {
	lim := fleet.Limits{MaxOTLPAttributes: 2}
	svc := func() string { return "checkout" }
	for _, tc := range []struct {
		typ  pmetric.MetricType
		add  func(m pmetric.Metric) pcommon.Map // appends a point, returns its attributes
		make func(m pmetric.Metric)
	}{
		{pmetric.MetricTypeGauge, func(m pmetric.Metric) pcommon.Map { return m.Gauge().DataPoints().AppendEmpty().Attributes() }, func(m pmetric.Metric) { m.SetEmptyGauge() }},
		{pmetric.MetricTypeSum, func(m pmetric.Metric) pcommon.Map { return m.Sum().DataPoints().AppendEmpty().Attributes() }, func(m pmetric.Metric) { m.SetEmptySum() }},
		{pmetric.MetricTypeHistogram, func(m pmetric.Metric) pcommon.Map { return m.Histogram().DataPoints().AppendEmpty().Attributes() }, func(m pmetric.Metric) { m.SetEmptyHistogram() }},
		{pmetric.MetricTypeExponentialHistogram, func(m pmetric.Metric) pcommon.Map {
			return m.ExponentialHistogram().DataPoints().AppendEmpty().Attributes()
		}, func(m pmetric.Metric) { m.SetEmptyExponentialHistogram() }},
		{pmetric.MetricTypeSummary, func(m pmetric.Metric) pcommon.Map { return m.Summary().DataPoints().AppendEmpty().Attributes() }, func(m pmetric.Metric) { m.SetEmptySummary() }},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			m := pmetric.NewMetric()
			m.SetName("m")
			tc.make(m)
			fill(tc.add(m), 2)
			require.NoError(t, (&Receiver{}).checkPoints(nil, &lim, m, svc))
			fill(tc.add(m), 3)
			require.EqualError(t, (&Receiver{}).checkPoints(nil, &lim, m, svc),
				`data point 1 of metric "m" (service "checkout") has 3 attributes, more than limits.max_otlp_attributes (2)`)
		})
	}
}
