package loki

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	"github.com/fleetgate/fleetgate/query/lokiapi"
	"github.com/fleetgate/fleetgate/store/logs"
)

type env struct {
	h     *Handler
	store *logs.Store
	mux   *http.ServeMux
}

func newEnv(t testing.TB, sigCfg logtrace.Config, limits ...fleet.Limits) *env {
	lim := fleet.DefaultLimits()
	if len(limits) > 0 {
		lim = limits[0]
	}
	return newEnvWith(t, sigCfg, func(fc *fleet.Config) { fc.Limits = &lim })
}

// newEnvWith is eu-1 and us-1; fleetCfg may change their config.
func newEnvWith(t testing.TB, sigCfg logtrace.Config, fleetCfg func(*fleet.Config)) *env {
	t.Setenv("FG_TEST_TOKEN_EU1", "tok-eu-1")
	t.Setenv("FG_TEST_TOKEN_US1", "tok-us-1")
	fc := fleet.Config{Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Region: "eu-west-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_TEST_TOKEN_EU1"}},
		{Name: "us-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_TEST_TOKEN_US1"}},
	}}
	fleetCfg(&fc)
	reg, err := fleet.NewRegistry(fc)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := logs.Open(t.TempDir(), logs.Config{}, nil, logger)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	sig, err := logtrace.New(sigCfg, reg, nil, []logtrace.LogsSink{st}, nil, nil, logger)
	require.NoError(t, err)
	h, err := NewHandler(Config{MaxRequestBytes: 1 << 20}, sig, nil, logger)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("POST /loki/api/v1/push", h)
	lokiapi.New(st).Register(mux)
	return &env{h: h, store: st, mux: mux}
}

func (e *env) do(t testing.TB, method, path, token, ctype, cenc string, body []byte) (int, string) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if cenc != "" {
		req.Header.Set("Content-Encoding", cenc)
	}
	rec := httptest.NewRecorder()
	// The read API needs a reader scope (access.Authenticator.Read).
	e.mux.ServeHTTP(rec, req.WithContext(access.WithScope(req.Context(), access.All())))
	return rec.Code, rec.Body.String()
}

func testRequest(base time.Time) *push.PushRequest {
	return &push.PushRequest{Streams: []push.Stream{
		{Labels: `{app="api", namespace="shop", level="error"}`, Entries: []push.Entry{
			{Timestamp: base, Line: "GET /cart 500 boom"},
			{Timestamp: base.Add(time.Second), Line: "GET /cart 500 again", StructuredMetadata: push.LabelsAdapter{{Name: "trace_id", Value: "abc123"}}},
		}},
		{Labels: `{app="web", namespace="shop"}`, Entries: []push.Entry{
			{Timestamp: base.Add(2 * time.Second), Line: "rendered / in 3ms"},
		}},
	}}
}

func encode(t testing.TB, req *push.PushRequest, format, cenc string) (ctype string, body []byte) {
	switch format {
	case "protobuf":
		raw, err := req.Marshal()
		require.NoError(t, err)
		ctype, body = "application/x-protobuf", snappy.Encode(nil, raw)
	case "json":
		b, err := EncodeJSON(req)
		require.NoError(t, err)
		ctype, body = "application/json", b
	}
	if cenc == "gzip" {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		require.NoError(t, zw.Close())
		body = buf.Bytes()
	}
	return ctype, body
}

func TestPushRoundTrip(t *testing.T) {
	for _, tc := range []struct{ format, cenc string }{
		{"protobuf", ""}, {"protobuf", "gzip"}, {"json", ""}, {"json", "gzip"},
	} {
		t.Run(tc.format+"/"+tc.cenc, func(t *testing.T) {
			e := newEnv(t, logtrace.Config{})
			base := time.Now().Add(-time.Minute).Truncate(time.Millisecond).UTC()
			sent := testRequest(base)
			ctype, body := encode(t, sent, tc.format, tc.cenc)
			code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, tc.cenc, body)
			require.Equal(t, http.StatusNoContent, code, msg)

			// What the store holds equals what was sent, with identity stamped.
			got := map[string][]push.Entry{}
			require.NoError(t, e.store.Select(context.Background(), 0, time.Now().UnixNano(), []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "cluster", "eu-1")}, false,
				func(ls labels.Labels, lstr string, en *push.Entry) error {
					got[lstr] = append(got[lstr], *en)
					return nil
				}))
			require.Len(t, got, 2)
			api := got[`{app="api", cluster="eu-1", level="error", namespace="shop", region="eu-west-1"}`]
			require.Len(t, api, 2)
			require.True(t, sent.Streams[0].Entries[1].Timestamp.Equal(api[1].Timestamp))
			require.Equal(t, sent.Streams[0].Entries[1].Line, api[1].Line)
			require.Equal(t, sent.Streams[0].Entries[1].StructuredMetadata, api[1].StructuredMetadata)

			// And the Loki read API returns it.
			q := url.Values{"query": {`{cluster="eu-1", app="api"} |= "again"`}, "start": {fmt.Sprint(base.Add(-time.Hour).UnixNano())}, "end": {fmt.Sprint(time.Now().UnixNano())}}
			code, out := e.do(t, "GET", "/loki/api/v1/query_range?"+q.Encode(), "", "", "", nil)
			require.Equal(t, http.StatusOK, code, out)
			var resp struct {
				Data struct {
					ResultType string `json:"resultType"`
					Result     []struct {
						Stream map[string]string `json:"stream"`
						Values [][]any           `json:"values"`
					} `json:"result"`
				} `json:"data"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &resp))
			require.Equal(t, "streams", resp.Data.ResultType)
			require.Len(t, resp.Data.Result, 1)
			require.Equal(t, "eu-1", resp.Data.Result[0].Stream["cluster"])
			require.Len(t, resp.Data.Result[0].Values, 1)
			require.Equal(t, "GET /cart 500 again", resp.Data.Result[0].Values[0][1])
			require.Equal(t, map[string]any{"trace_id": "abc123"}, resp.Data.Result[0].Values[0][2])
		})
	}
}

func TestPushErrors(t *testing.T) {
	base := time.Now()
	good := testRequest(base)
	ctype, body := encode(t, good, "protobuf", "")
	conflict := &push.PushRequest{Streams: []push.Stream{{Labels: `{app="x", cluster="us-1"}`, Entries: []push.Entry{{Timestamp: base, Line: "x"}}}}}
	_, conflictBody := encode(t, conflict, "protobuf", "")
	long := &push.PushRequest{Streams: []push.Stream{{Labels: `{app="` + strings.Repeat("v", 5000) + `"}`, Entries: []push.Entry{{Timestamp: base, Line: "x"}}}}}
	_, longBody := encode(t, long, "protobuf", "")
	badLabels := &push.PushRequest{Streams: []push.Stream{{Labels: `{app="x"`, Entries: []push.Entry{{Timestamp: base, Line: "x"}}}}}
	_, badLabelsBody := encode(t, badLabels, "protobuf", "")
	for _, tc := range []struct {
		name, token, ctype, cenc string
		body                     []byte
		status                   int
		msg                      string
	}{
		{"no token", "", ctype, "", body, 401, "unauthenticated"},
		{"wrong token", "nope", ctype, "", body, 401, "matches no cluster"},
		{"not snappy", "tok-eu-1", ctype, "", []byte("garbage!"), 400, "snappy"},
		{"bad json", "tok-eu-1", "application/json", "", []byte(`{"streams":[{"stream":{"a":"b"},"values":[["notanumber","x"]]}]}`), 400, "not nanoseconds"},
		{"bad gzip", "tok-eu-1", ctype, "gzip", body, 400, "gzip"},
		{"content type", "tok-eu-1", "text/plain", "", body, 415, "Content-Type"},
		{"content encoding", "tok-eu-1", ctype, "br", body, 415, "Content-Encoding"},
		{"too large", "tok-eu-1", ctype, "", make([]byte, 2<<20), 413, "max_request_bytes"},
		{"conflict names stream", "tok-eu-1", ctype, "", conflictBody, 400, `{app="x", cluster="us-1"}`},
		{"bad labels name stream", "tok-eu-1", ctype, "", badLabelsBody, 400, `{app="x"`},
		{"label too long", "tok-eu-1", ctype, "", longBody, 400, `value of label "app" is 5000 bytes, longer than limits.max_label_value_length (4096)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, logtrace.Config{})
			code, msg := e.do(t, "POST", "/loki/api/v1/push", tc.token, tc.ctype, tc.cenc, tc.body)
			require.Equal(t, tc.status, code, msg)
			require.Contains(t, msg, tc.msg)
		})
	}
}

func TestPushRateLimit(t *testing.T) {
	lim := fleet.DefaultLimits()
	lim.LogsRateBytes, lim.LogsBurstBytes = 10, 60
	e := newEnv(t, logtrace.Config{}, lim)
	ctype, body := encode(t, testRequest(time.Now()), "protobuf", "")
	code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 204, code, msg)
	code, msg = e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 429, code, msg)
	require.Contains(t, msg, `cluster "eu-1" is over its log ingestion limit`)
	// Another cluster has its own budget.
	code, msg = e.do(t, "POST", "/loki/api/v1/push", "tok-us-1", ctype, "", body)
	require.Equal(t, 204, code, msg)
}

// A push larger than the burst could never pass the limiter: it gets a 413
// naming the setting, not a 429 that senders retry for ever.
func TestPushLargerThanBurstIs413(t *testing.T) {
	lim := fleet.DefaultLimits()
	lim.LogsRateBytes, lim.LogsBurstBytes = 1, 5
	e := newEnv(t, logtrace.Config{}, lim)
	ctype, body := encode(t, testRequest(time.Now()), "protobuf", "")
	code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 413, code, msg)
	require.Contains(t, msg, "limits.logs_burst_bytes")
}

func TestReadAPIMetricQueries(t *testing.T) {
	e := newEnv(t, logtrace.Config{})
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	req := &push.PushRequest{}
	for i := range 60 {
		app := []string{"api", "web"}[i%2]
		req.Streams = append(req.Streams, push.Stream{Labels: fmt.Sprintf(`{app=%q, namespace="shop"}`, app),
			Entries: []push.Entry{{Timestamp: base.Add(time.Duration(i) * time.Second), Line: fmt.Sprintf("line %d", i)}}})
	}
	ctype, body := encode(t, req, "protobuf", "")
	code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 204, code, msg)

	at := base.Add(59 * time.Second)
	for _, tc := range []struct {
		q    string
		want map[string]string // metric label string -> value
	}{
		{`count_over_time({namespace="shop"}[5m])`, map[string]string{
			`{app="api", cluster="eu-1", namespace="shop", region="eu-west-1"}`: "30",
			`{app="web", cluster="eu-1", namespace="shop", region="eu-west-1"}`: "30"}},
		{`sum by (cluster) (count_over_time({namespace="shop"} |~ "line [0-9]$" [5m]))`, map[string]string{`{cluster="eu-1"}`: "10"}},
		{`sum(rate({app="api"}[1m]))`, map[string]string{`{}`: "0.5"}},
		{`sum(count_over_time({app="api"} != "line 1" [5m])) by (app)`, map[string]string{`{app="api"}`: "25"}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			q := url.Values{"query": {tc.q}, "time": {fmt.Sprint(at.UnixNano())}}
			code, out := e.do(t, "GET", "/loki/api/v1/query?"+q.Encode(), "", "", "", nil)
			require.Equal(t, 200, code, out)
			var resp struct {
				Data struct {
					ResultType string `json:"resultType"`
					Result     []struct {
						Metric map[string]string `json:"metric"`
						Value  [2]any            `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &resp))
			require.Equal(t, "vector", resp.Data.ResultType)
			got := map[string]string{}
			for _, r := range resp.Data.Result {
				got[labels.FromMap(r.Metric).String()] = r.Value[1].(string)
			}
			require.Equal(t, tc.want, got)
		})
	}
	// Range query, labels, values, series.
	q := url.Values{"query": {`sum(count_over_time({app="web"}[1m]))`}, "start": {fmt.Sprint(base.Unix())}, "end": {fmt.Sprint(at.Unix())}, "step": {"30s"}}
	code, out := e.do(t, "GET", "/loki/api/v1/query_range?"+q.Encode(), "", "", "", nil)
	require.Equal(t, 200, code, out)
	require.Contains(t, out, `"resultType":"matrix"`)
	code, out = e.do(t, "GET", "/loki/api/v1/labels", "", "", "", nil)
	require.Equal(t, 200, code, out)
	require.JSONEq(t, `{"status":"success","data":["app","cluster","namespace","region"]}`, out)
	code, out = e.do(t, "GET", "/loki/api/v1/label/app/values", "", "", "", nil)
	require.Equal(t, 200, code, out)
	require.JSONEq(t, `{"status":"success","data":["api","web"]}`, out)
	code, out = e.do(t, "GET", "/loki/api/v1/series?match[]="+url.QueryEscape(`{app="web"}`), "", "", "", nil)
	require.Equal(t, 200, code, out)
	require.JSONEq(t, `{"status":"success","data":[{"app":"web","cluster":"eu-1","namespace":"shop","region":"eu-west-1"}]}`, out)
	// Unsupported constructs are a 400 naming them.
	code, out = e.do(t, "GET", "/loki/api/v1/query?query="+url.QueryEscape(`{app="web"} | json`), "", "", "", nil)
	require.Equal(t, 400, code, out)
	require.Contains(t, out, "json")
	code, out = e.do(t, "GET", "/loki/api/v1/query?query="+url.QueryEscape(`quantile_over_time(0.9, {app="web"}[1m])`), "", "", "", nil)
	require.Equal(t, 400, code, out)
	require.Contains(t, out, "quantile_over_time")
}

type discardLogs struct{}

func (discardLogs) PushLogs(context.Context, []push.Stream) error { return nil }

// FuzzDecode decodes arbitrary bodies and pushes what decodes through the
// logs-and-traces hub (identity, limits, time bounds): nothing may panic, and a
// refusal is a 4xx.
func FuzzDecode(f *testing.F) {
	base := time.Unix(1700000000, 0)
	_, pb := encode(f, testRequest(base), "protobuf", "")
	_, js := encode(f, testRequest(base), "json", "")
	f.Add(pb, false)
	f.Add(js, true)
	f.Add([]byte(`{"streams":[{"stream":{"app":"a"},"values":[["-5","x",{"cluster":"us-1"}]]}]}`), true)
	f.Add([]byte(`{"streams":[{"stream":{"app":"a","cluster":"eu-1"},"values":[["9223372036854775807","x"]]}]}`), true)
	f.Setenv("FG_FUZZ_EU1", "tok")
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: []fleet.ClusterConfig{{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_FUZZ_EU1"}}}})
	require.NoError(f, err)
	sig, err := logtrace.New(logtrace.Config{LogsMaxAge: 24 * time.Hour}, reg, nil, []logtrace.LogsSink{discardLogs{}}, nil, nil, slog.New(slog.DiscardHandler))
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body []byte, isJSON bool) {
		format := FormatProtobuf
		if isJSON {
			format = FormatJSON
		}
		req, err := Decode(body, format, 1<<20)
		if err != nil {
			if s := Status(err); s != 400 && s != 413 {
				t.Fatalf("status %d for %v", s, err)
			}
			return
		}
		// A decoded request re-encodes and decodes to the same streams.
		raw, err := req.Marshal()
		require.NoError(t, err)
		again, err := Decode(snappy.Encode(nil, raw), FormatProtobuf, 1<<30)
		require.NoError(t, err)
		require.Equal(t, len(req.Streams), len(again.Streams))
		if err := sig.PushLogs(context.Background(), reg.Get("eu-1"), req.Streams); err != nil {
			if s := Status(err); s < 400 || s >= 500 {
				t.Fatalf("status %d for %v", s, err)
			}
		}
	})
}
