package tempoapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/store/traces"
)

func tempoTraces(now time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	for i, svc := range []string{"checkout", "payments"} {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", svc)
		rs.Resource().Attributes().PutStr("cluster", "eu-1")
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		for tr := range 3 {
			sp := spans.AppendEmpty()
			sp.SetTraceID(pcommon.TraceID{byte(tr + 1)})
			sp.SetSpanID(pcommon.SpanID{byte(i + 1), byte(tr)})
			if i > 0 {
				sp.SetParentSpanID(pcommon.SpanID{1, byte(tr)})
			}
			sp.SetName(svc + " op")
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(tr) * time.Second)))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(tr)*time.Second + 20*time.Millisecond)))
			sp.Attributes().PutInt("http.status_code", int64(200+tr*100))
			if tr == 2 {
				sp.Status().SetCode(ptrace.StatusCodeError)
			}
		}
	}
	return td
}

func TestTempoAPI(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := traces.Open(dir, traces.Config{}, nil, logger)
	require.NoError(t, err)
	now := time.Now().Add(-time.Minute)
	require.NoError(t, st.PushTraces(context.Background(), tempoTraces(now)))
	// Reopen: the index is rebuilt from disk.
	require.NoError(t, st.Close())
	st, err = traces.Open(dir, traces.Config{}, nil, logger)
	require.NoError(t, err)
	defer st.Close()

	mux := http.NewServeMux()
	New(st).Register(mux)
	get := func(path string, hdr ...string) (int, string) {
		req := httptest.NewRequest("GET", path, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		rec := httptest.NewRecorder()
		withScope(mux, access.All()).ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}

	code, body := get("/api/traces/03000000000000000000000000000000")
	require.Equal(t, 200, code, body)
	var tr struct {
		Batches []json.RawMessage `json:"batches"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &tr))
	require.Len(t, tr.Batches, 2)
	code, body = get("/api/traces/03") // left-padded like Tempo: 000...03
	require.Equal(t, 404, code, body)
	code, body = get("/api/traces/zz")
	require.Equal(t, 400, code, body)

	// Protobuf (what Grafana asks for) decodes as OTLP TracesData.
	code, body = get("/api/traces/03000000000000000000000000000000", "Accept", "application/protobuf")
	require.Equal(t, 200, code)
	var um ptrace.ProtoUnmarshaler
	td, err := um.UnmarshalTraces([]byte(body))
	require.NoError(t, err)
	require.Equal(t, 2, td.SpanCount())

	search := func(params url.Values) []traces.Summary {
		params.Set("start", "0")
		params.Set("end", "9999999999")
		code, body := get("/api/search?" + params.Encode())
		require.Equal(t, 200, code, body)
		var r struct {
			Traces []traces.Summary `json:"traces"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		return r.Traces
	}
	require.Len(t, search(url.Values{}), 3)
	res := search(url.Values{"tags": {"service.name=payments http.status_code=300"}})
	require.Len(t, res, 1)
	require.Equal(t, "02000000000000000000000000000000", res[0].TraceID)
	require.Equal(t, "checkout", res[0].RootServiceName)
	require.Equal(t, "checkout op", res[0].RootTraceName)
	require.EqualValues(t, 20, res[0].DurationMs)
	res = search(url.Values{"q": {`{ resource.service.name = "checkout" && status = error }`}})
	require.Len(t, res, 1)
	require.Equal(t, "03000000000000000000000000000000", res[0].TraceID)
	code, body = get("/api/search?q=" + url.QueryEscape(`{ duration > 1s }`))
	require.Equal(t, 400, code)
	require.Contains(t, body, "duration > 1s")

	for _, bad := range []string{"start=10&end=1", "start=-5", "end=99999999999999999", "start=x"} {
		code, body = get("/api/search?" + bad)
		require.Equal(t, 400, code, bad)
		require.NotEmpty(t, body)
	}

	code, body = get("/api/search/tags")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"tagNames":["cluster","http.status_code","service.name"]}`, body)
	code, body = get("/api/search/tag/service.name/values")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"tagValues":["checkout","payments"]}`, body)
	code, body = get("/api/v2/search/tag/resource.cluster/values")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"tagValues":[{"type":"string","value":"eu-1"}]}`, body)
}

// TraceQL beyond the supported subset is refused with a 400, never matched
// literally into an empty 200.
func TestTraceQLSubsetRefusesTheRest(t *testing.T) {
	for _, q := range []string{
		`{ a = "x" || b = "y" }`,
		`{ a = "x" } && { b = "y" }`,
		`{ a = "x" } | count() > 2`,
		`{ duration > 1s }`,
		`{ a = }`,
	} {
		_, err := parseTraceQL(q)
		require.Error(t, err, q)
	}
	conds, err := parseTraceQL(`{ resource.service.name = "checkout" && span.http.status_code = 500 && status = error }`)
	require.NoError(t, err)
	require.Len(t, conds, 3)
	require.Equal(t, "checkout", conds[0].Value)
}
