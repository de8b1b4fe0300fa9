//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/stretchr/testify/require"
)

// lokiDest is an in-test Loki push endpoint decoding with the Loki push types.
type lokiDest struct {
	mu    sync.Mutex
	lines map[string]int // by service_name label value
	srv   *http.Server
	url   string
}

func startLokiDest(t *testing.T) *lokiDest {
	d := &lokiDest{lines: map[string]int{}}
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
signals:
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
