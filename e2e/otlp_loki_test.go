//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	prw "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// lokiDest is an in-test Loki push endpoint decoding with the Loki push types.
type lokiDest struct {
	mu    sync.Mutex
	lines map[string]int      // by stream labels
	uniq  map[string]struct{} // stream labels + timestamp + line
	srv   *http.Server
	url   string
}

func startLokiDest(t *testing.T) *lokiDest {
	d := &lokiDest{lines: map[string]int{}, uniq: map[string]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	d.url = "http://" + ln.Addr().String() + "/loki/api/v1/push"
	d.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, err := snappy.Decode(nil, body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var req push.PushRequest
		if err := req.Unmarshal(raw); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		d.mu.Lock()
		for _, s := range req.Streams {
			d.lines[s.Labels] += len(s.Entries)
			for _, e := range s.Entries {
				d.uniq[fmt.Sprint(s.Labels, e.Timestamp.UnixNano(), e.Line)] = struct{}{}
			}
		}
		d.mu.Unlock()
		w.WriteHeader(204)
	})}
	go func() { _ = d.srv.Serve(ln) }()
	t.Cleanup(func() { d.srv.Close() })
	return d
}

func (d *lokiDest) total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, v := range d.lines {
		n += v
	}
	return n
}

// unique counts distinct lines: delivery is at least once, so a request cut
// by an outage may arrive twice.
func (d *lokiDest) unique() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.uniq)
}

func getJSON(t *testing.T, u string, v any) int {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && v != nil {
		require.NoErrorf(t, json.Unmarshal(b, v), "decoding %s: %s", u, b)
	}
	return resp.StatusCode
}

type lokiStreams struct {
	Data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Stream map[string]string `json:"stream"`
			Values [][]any           `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

func TestOTLPAndLokiSignals(t *testing.T) {
	tg := requireBinary(t, "telemetrygen")
	token := "tok-eu-1-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dest := startLokiDest(t)
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: eu-1
    region: eu-west-1
    credentials:
      bearer_token_file: %s
logs_traces:
  derived_metrics_interval: 1s
forward_logs:
  - name: test-loki
    url: %s
    min_backoff: 50ms
`, writeSecret(t, "eu-1.token", token), dest.url))

	auth := fmt.Sprintf(`Authorization="Bearer %s"`, token)
	tgRun := func(args ...string) {
		t.Helper()
		cmd := exec.Command(tg, args...)
		out, err := cmd.CombinedOutput()
		require.NoErrorf(t, err, "telemetrygen %v:\n%s", args, tail(string(out), 3000))
	}
	const n = 20
	for _, tr := range []struct{ name, endpoint string }{{"grpc", fg.OTLPGRPC}, {"http", fg.OTLPHTTP}} {
		common := []string{"--otlp-endpoint", tr.endpoint, "--otlp-insecure", "--otlp-header", auth, "--rate", "0",
			"--otlp-attributes", fmt.Sprintf(`service.name="tg-%s"`, tr.name), "--otlp-attributes", `k8s.namespace.name="shop"`}
		if tr.name == "http" {
			common = append(common, "--otlp-http")
		}
		tgRun(append([]string{"metrics", "--metrics", strconv.Itoa(n)}, common...)...)
		tgRun(append([]string{"logs", "--logs", strconv.Itoa(n), "--body", "order 17 failed", "--severity-text", "Error", "--severity-number", "17"}, common...)...)
		tgRun(append([]string{"traces", "--traces", strconv.Itoa(n), "--child-spans", "2"}, common...)...)
	}

	now := time.Now()
	for _, tr := range []string{"grpc", "http"} {
		svc := "tg-" + tr
		// Metrics: translated like Prometheus's OTLP receiver (job from service.name), stamped with the cluster.
		eventually(t, 30*time.Second, "telemetrygen metrics over "+tr, func() error {
			res := query(t, fg.URL, fmt.Sprintf(`gen{cluster="eu-1", region="eu-west-1", job=%q}`, svc), time.Now())
			if len(res) == 0 {
				return fmt.Errorf("no gen series for %s", svc)
			}
			return nil
		})
		res := query(t, fg.URL, fmt.Sprintf(`target_info{cluster="eu-1", job=%q}`, svc), time.Now())
		require.NotEmpty(t, res, "target_info")
		require.Equal(t, "eu-1", res[0].Metric["k8s_cluster_name"])

		// Logs come back through the Loki read API.
		q := url.Values{"query": {fmt.Sprintf(`{cluster="eu-1", service_name=%q} |= "order 17"`, svc)}, "limit": {"1000"},
			"start": {strconv.FormatInt(now.Add(-time.Hour).UnixNano(), 10)}, "end": {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)}}
		var ls lokiStreams
		require.Equal(t, 200, getJSON(t, fg.URL+"/loki/api/v1/query_range?"+q.Encode(), &ls))
		require.Equal(t, "streams", ls.Data.ResultType)
		lines := 0
		for _, s := range ls.Data.Result {
			require.Equal(t, "shop", s.Stream["k8s_namespace_name"])
			lines += len(s.Values)
		}
		require.Equal(t, n, lines, "log lines of %s", svc)
		mq := url.Values{"query": {fmt.Sprintf(`sum by (cluster) (count_over_time({service_name=%q}[1h]))`, svc)}, "time": {strconv.FormatInt(time.Now().Add(time.Second).UnixNano(), 10)}}
		var mv struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  []any             `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		require.Equal(t, 200, getJSON(t, fg.URL+"/loki/api/v1/query?"+mq.Encode(), &mv))
		require.Len(t, mv.Data.Result, 1)
		require.Equal(t, strconv.Itoa(n), mv.Data.Result[0].Value[1])

		// A trace comes back by ID (found through the Tempo tag search).
		var sr struct {
			Traces []struct {
				TraceID         string `json:"traceID"`
				RootServiceName string `json:"rootServiceName"`
			} `json:"traces"`
		}
		sq := url.Values{"tags": {"service.name=" + svc}, "limit": {"100"}, "start": {strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)}, "end": {strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10)}}
		require.Equal(t, 200, getJSON(t, fg.URL+"/api/search?"+sq.Encode(), &sr))
		require.Len(t, sr.Traces, n, "traces of %s", svc)
		var tr1 struct {
			Batches []struct {
				Resource struct {
					Attributes []struct {
						Key   string         `json:"key"`
						Value map[string]any `json:"value"`
					} `json:"attributes"`
				} `json:"resource"`
				ScopeSpans []struct {
					Spans []struct {
						TraceID string `json:"traceId"`
						Name    string `json:"name"`
					} `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"batches"`
		}
		require.Equal(t, 200, getJSON(t, fg.URL+"/api/traces/"+sr.Traces[0].TraceID, &tr1))
		spans := 0
		for _, b := range tr1.Batches {
			for _, ss := range b.ScopeSpans {
				for _, sp := range ss.Spans {
					require.Equal(t, sr.Traces[0].TraceID, sp.TraceID)
					spans++
				}
			}
			found := false
			for _, a := range b.Resource.Attributes {
				if a.Key == "k8s.cluster.name" && a.Value["stringValue"] == "eu-1" {
					found = true
				}
			}
			require.True(t, found, "k8s.cluster.name stamped on the resource")
		}
		require.Equal(t, 3, spans, "root span and two children")
		require.Equal(t, 404, getJSON(t, fg.URL+"/api/traces/0123456789abcdef0123456789abcdef", nil))

		// RED metrics and log metrics appear in the TSDB with the cluster label.
		eventually(t, 30*time.Second, "span RED metrics for "+svc, func() error {
			res := query(t, fg.URL, fmt.Sprintf(`sum(traces_span_metrics_calls_total{cluster="eu-1", service_name=%q})`, svc), time.Now())
			if len(res) == 0 || res[0].Value[1] != strconv.Itoa(3*n) {
				return fmt.Errorf("calls: %v", res)
			}
			h := query(t, fg.URL, fmt.Sprintf(`sum(traces_span_metrics_duration_seconds_count{cluster="eu-1", service_name=%q})`, svc), time.Now())
			if len(h) == 0 || h[0].Value[1] != strconv.Itoa(3*n) {
				return fmt.Errorf("duration count: %v", h)
			}
			return nil
		})
	}
	eventually(t, 30*time.Second, "log line metrics", func() error {
		res := query(t, fg.URL, `sum(fleetgate_log_lines_total{cluster="eu-1", namespace="shop"})`, time.Now())
		if len(res) == 0 || res[0].Value[1] != strconv.Itoa(2*n) {
			return fmt.Errorf("log lines: %v", res)
		}
		return nil
	})

	// Loki push: JSON with structured metadata, identity enforced.
	push := func(tok, body string) (int, string) {
		req, _ := http.NewRequest("POST", fg.URL+"/loki/api/v1/push", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	code, msg := push(token, `{"streams":[{"stream":{"app":"promtail","namespace":"shop"},"values":[["`+ts+`","hello from promtail",{"trace_id":"abc"}]]}]}`)
	require.Equal(t, 204, code, msg)
	code, msg = push("", `{"streams":[]}`)
	require.Equal(t, 401, code, msg)
	code, msg = push(token, `{"streams":[{"stream":{"app":"x","cluster":"us-9"},"values":[["`+ts+`","spoof"]]}]}`)
	require.Equal(t, 400, code, msg)
	require.Contains(t, msg, `cluster="us-9"`)
	var ls lokiStreams
	q := url.Values{"query": {`{app="promtail"}`}}
	require.Equal(t, 200, getJSON(t, fg.URL+"/loki/api/v1/query_range?"+q.Encode(), &ls))
	require.Len(t, ls.Data.Result, 1)
	require.Equal(t, "eu-1", ls.Data.Result[0].Stream["cluster"])
	require.Equal(t, map[string]any{"trace_id": "abc"}, ls.Data.Result[0].Values[0][2])

	// Every accepted log line was forwarded to the Loki destination.
	eventually(t, 30*time.Second, "forwarded log lines", func() error {
		if got := dest.total(); got != 2*n+1 {
			return fmt.Errorf("destination has %d lines, want %d", got, 2*n+1)
		}
		return nil
	})
}

// TestOTLPMetricsEqualPrometheusTranslation captures what telemetrygen
// sends, posts the same bytes to fleetgate, and checks that every series
// Prometheus's OTLP translator makes of them is in fleetgate with the same
// value, plus the cluster identity.
func TestOTLPMetricsEqualPrometheusTranslation(t *testing.T) {
	tg := requireBinary(t, "telemetrygen")
	token := "tok-cmp-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: eu-2
    region: eu-central-1
    credentials:
      bearer_token_file: %s
`, writeSecret(t, "eu-2.token", token)))

	var mu sync.Mutex
	var bodies [][]byte
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	capture := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			require.NoError(t, err)
			b, _ = io.ReadAll(zr)
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		resp, _ := pmetricotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	})}
	go func() { _ = capture.Serve(ln) }()
	defer capture.Close()
	for _, mt := range []string{"Gauge", "Sum", "Histogram"} {
		out, err := exec.Command(tg, "metrics", "--otlp-http", "--otlp-insecure", "--otlp-endpoint", ln.Addr().String(), "--rate", "0",
			"--metrics", "3", "--metric-type", mt, "--otlp-metric-name", "tg_"+strings.ToLower(mt),
			"--otlp-attributes", `service.name="tg-cmp"`, "--otlp-attributes", `service.instance.id="i-1"`, "--otlp-attributes", `host.name="node-7"`).CombinedOutput()
		require.NoErrorf(t, err, "%s", tail(string(out), 2000))
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, bodies)

	type sample struct {
		ls labels.Labels
		t  int64
		v  float64
	}
	var want []sample
	seen := map[string]bool{}
	for _, b := range bodies {
		req, err := http.NewRequest("POST", fg.URL+"/v1/metrics", bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode, string(rb))
		er := pmetricotlp.NewExportResponse()
		require.NoError(t, er.UnmarshalProto(rb))
		require.Zero(t, er.PartialSuccess().RejectedDataPoints(), er.PartialSuccess().ErrorMessage())

		// What Prometheus's translator (default settings, as Prometheus's
		// own OTLP receiver) makes of the same request, with the identity
		// attributes fleetgate sets on the resource.
		er2 := pmetricotlp.NewExportRequest()
		require.NoError(t, er2.UnmarshalProto(b))
		md := er2.Metrics()
		for i := range md.ResourceMetrics().Len() {
			a := md.ResourceMetrics().At(i).Resource().Attributes()
			a.PutStr("cluster", "eu-2")
			a.PutStr("region", "eu-central-1")
			a.PutStr("k8s.cluster.name", "eu-2")
		}
		app := &recordingAppender{}
		conv := prw.NewPrometheusConverter(app)
		_, err = conv.FromMetrics(context.Background(), md, prw.Settings{
			AddMetricSuffixes: true, LookbackDelta: 5 * time.Minute,
			PromoteResourceAttributes: prw.NewPromoteResourceAttributes(promconfig.OTLPConfig{PromoteResourceAttributes: []string{"cluster"}}),
		})
		require.NoError(t, err)
		for _, s := range app.samples {
			b := labels.NewBuilder(s.ls)
			b.Set("region", "eu-central-1")
			// telemetrygen sends its N points of a run with one timestamp;
			// the TSDB (Prometheus's as fleetgate's) keeps the first.
			k := fmt.Sprint(b.Labels().String(), s.t)
			if !seen[k] {
				seen[k] = true
				want = append(want, sample{b.Labels(), s.t, s.v})
			}
		}
	}
	require.NotEmpty(t, want)
	names := map[string]bool{}
	for _, s := range want {
		names[s.ls.Get("__name__")] = true
		var sel []string
		s.ls.Range(func(l labels.Label) { sel = append(sel, fmt.Sprintf("%s=%q", l.Name, l.Value)) })
		q := "{" + strings.Join(sel, ",") + "}"
		res := query(t, fg.URL, q, time.UnixMilli(s.t))
		require.Lenf(t, res, 1, "series %s", q)
		got, _ := strconv.ParseFloat(res[0].Value[1].(string), 64)
		if d := s.v - got; d > 1e-9 || d < -1e-9 {
			raw := query(t, fg.URL, q+"[10m]", time.UnixMilli(s.t).Add(time.Minute))
			t.Fatalf("series %s at %d: want %v, got %v; samples: %v; want list: %v", q, s.t, s.v, got, raw, want)
		}
		require.Equal(t, len(res[0].Metric), s.ls.Len(), "fleetgate's series has exactly the translator's labels: %v", res[0].Metric)
	}
	for _, n := range []string{"tg_gauge", "tg_sum_total", "tg_histogram_bucket", "tg_histogram_count", "tg_histogram_sum", "target_info"} {
		require.True(t, names[n], "translator produced %s (got %v)", n, names)
	}
}

type recordingAppender struct {
	samples []struct {
		ls labels.Labels
		t  int64
		v  float64
	}
}

func (a *recordingAppender) Append(_ storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AOptions) (storage.SeriesRef, error) {
	if h != nil || fh != nil {
		return 0, fmt.Errorf("unexpected native histogram for %s", ls)
	}
	a.samples = append(a.samples, struct {
		ls labels.Labels
		t  int64
		v  float64
	}{ls, t, v})
	return 1, nil
}
func (a *recordingAppender) Commit() error   { return nil }
func (a *recordingAppender) Rollback() error { return nil }

// TestForwardLogsSurvivesOutages: the Loki destination goes down, fleetgate
// keeps accepting (queued on disk), fleetgate itself restarts, the
// destination comes back: every acknowledged line arrives.
func TestForwardLogsSurvivesOutages(t *testing.T) {
	token := "tok-fw-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dest := startLokiDest(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(dest.url, "http://"), "/loki/api/v1/push")
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: eu-3
    credentials:
      bearer_token_file: %s
forward_logs:
  - name: loki
    url: %s
    min_backoff: 50ms
    max_backoff: 200ms
`, writeSecret(t, "eu-3.token", token), dest.url))
	pushN := func(from, n int) {
		t.Helper()
		var vals []string
		for i := from; i < from+n; i++ {
			vals = append(vals, fmt.Sprintf(`["%d","line %d"]`, time.Now().UnixNano(), i))
		}
		req, _ := http.NewRequest("POST", fg.URL+"/loki/api/v1/push",
			strings.NewReader(`{"streams":[{"stream":{"app":"fw"},"values":[`+strings.Join(vals, ",")+`]}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 204, resp.StatusCode, string(b))
	}
	waitTotal := func(want int) {
		t.Helper()
		eventually(t, 60*time.Second, "forwarded lines", func() error {
			if got := dest.unique(); got != want {
				return fmt.Errorf("destination has %d lines, want %d", got, want)
			}
			return nil
		})
	}
	pushN(0, 10)
	waitTotal(10)
	require.NoError(t, dest.srv.Close()) // destination down
	pushN(10, 10)
	pushN(20, 10)
	fg.Restart(t, syscall.SIGTERM) // fleetgate restarts while the destination is down
	pushN(30, 10)
	// The restarted fleetgate tries the destination, fails and keeps the
	// lines queued on disk.
	eventually(t, 30*time.Second, "a failed delivery after the restart, lines queued", func() error {
		failed := metricValue(t, fg.URL, `fleetgate_forward_failed_total{destination="loki/loki"}`)
		pending := metricValue(t, fg.URL, `fleetgate_forward_pending_bytes{destination="loki/loki"}`)
		if failed == 0 || pending == 0 {
			return fmt.Errorf("%g failed deliveries, %g bytes pending", failed, pending)
		}
		return nil
	})
	require.Equal(t, 10, dest.unique())
	// Destination back on the same address, once the port is free again.
	var ln net.Listener
	var err error
	require.Eventually(t, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}, 5*time.Second, 100*time.Millisecond, "listening on %s again", addr)
	dest.srv = &http.Server{Handler: dest.srv.Handler}
	go func() { _ = dest.srv.Serve(ln) }()
	waitTotal(40)
}
