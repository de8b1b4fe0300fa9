//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// twoClusterConfig is a fleet of eu-1 and eu-2 with token files.
func twoClusterConfig(t *testing.T) (cfg, tokenFile1 string) {
	tokenFile1 = writeSecret(t, "eu-1.token", "eu-1-secret")
	tokenFile2 := writeSecret(t, "eu-2.token", "eu-2-secret")
	cfg = fmt.Sprintf(`
clusters:
  - name: eu-1
    region: eu-west
    credentials: {bearer_token_file: %s}
  - name: eu-2
    region: eu-central
    role: standby
    credentials: {bearer_token_file: %s}
`, tokenFile1, tokenFile2)
	return cfg, tokenFile1
}

// remoteWrite sends a remote-write 1.0 request and returns status and body.
func remoteWrite(t *testing.T, base, token string, req *prompb.WriteRequest) (int, string) {
	t.Helper()
	b, err := req.Marshal()
	require.NoError(t, err)
	hr, err := http.NewRequest(http.MethodPost, base+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, b)))
	require.NoError(t, err)
	hr.Header.Set("Content-Type", "application/x-protobuf")
	hr.Header.Set("Content-Encoding", "snappy")
	hr.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(hr)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func labelsKey(m map[string]string, drop ...string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		skip := false
		for _, d := range drop {
			if k == d {
				skip = true
			}
		}
		if !skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%q,", k, m[k])
	}
	return sb.String()
}

func parseVal(t *testing.T, v any) float64 {
	s, ok := v.(string)
	require.True(t, ok, "value %v", v)
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return f
}

func sameFloat(a, b float64) bool {
	if math.IsNaN(a) && math.IsNaN(b) {
		return true
	}
	if a == b {
		return true
	}
	return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// rawQuery runs an instant or range query and returns series keyed by labels (cluster/region dropped).
func rawQuery(t *testing.T, base string, params url.Values, drop ...string) map[string][][2]float64 {
	t.Helper()
	path := "/api/v1/query"
	if params.Get("start") != "" {
		path = "/api/v1/query_range"
	}
	code, r := apiGet(t, base, path, params)
	require.Equalf(t, 200, code, "%s %v: %s", base, params, r.Error)
	var d queryData
	require.NoError(t, json.Unmarshal(r.Data, &d))
	out := map[string][][2]float64{}
	var ss []promSeries
	switch d.ResultType {
	case "vector", "matrix":
		require.NoError(t, json.Unmarshal(d.Result, &ss))
	case "scalar":
		var v []any
		require.NoError(t, json.Unmarshal(d.Result, &v))
		ss = []promSeries{{Value: v}}
	}
	for _, s := range ss {
		k := labelsKey(s.Metric, drop...)
		if s.Value != nil {
			out[k] = append(out[k], [2]float64{s.Value[0].(float64), parseVal(t, s.Value[1])})
		}
		for _, v := range s.Values {
			out[k] = append(out[k], [2]float64{v[0].(float64), parseVal(t, v[1])})
		}
	}
	return out
}

// sameAnswers says how got (fleetgate's answer) differs from want (Prometheus's), nil when it does not.
func sameAnswers(what string, want, got map[string][][2]float64) error {
	if len(want) == 0 {
		return fmt.Errorf("%s: Prometheus returned nothing", what)
	}
	if len(want) != len(got) {
		return fmt.Errorf("%s: series count %d, fleetgate %d\nprometheus: %v\nfleetgate: %v", what, len(want), len(got), want, got)
	}
	for k, wv := range want {
		gv, ok := got[k]
		if !ok {
			return fmt.Errorf("%s: fleetgate lacks series %s (has %v)", what, k, got)
		}
		if len(wv) != len(gv) {
			return fmt.Errorf("%s %s: points\nprometheus %v\nfleetgate %v", what, k, wv, gv)
		}
		for i := range wv {
			if wv[i][0] != gv[i][0] {
				return fmt.Errorf("%s %s: timestamp %d: prometheus %v, fleetgate %v", what, k, i, wv[i][0], gv[i][0])
			}
			if !sameFloat(wv[i][1], gv[i][1]) {
				return fmt.Errorf("%s %s at %v: prometheus %v, fleetgate %v", what, k, wv[i][0], wv[i][1], gv[i][1])
			}
		}
	}
	return nil
}

// TestPrometheusRemoteWriteSameAnswers: Debian's Prometheus scrapes itself and
// remote-writes to fleetgate with eu-1's token; both must answer the same
// PromQL the same, apart from the stamped cluster identity.
func TestPrometheusRemoteWriteSameAnswers(t *testing.T) {
	cfg, tokenFile := twoClusterConfig(t)
	fg := startFleetgate(t, cfg)
	prom, promURL := startPrometheus(t, "prometheus-eu-1", fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ['$SELF']}]
remote_write:
  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms}
    metadata_config: {send_interval: 2s}
`, fg.URL, tokenFile))
	_ = prom

	// The first sample fleetgate has: Prometheus's WAL watcher skips the first scrapes.
	var first float64
	eventually(t, 60*time.Second, "samples arrive in fleetgate", func() error {
		got := rawQuery(t, fg.URL, url.Values{"query": {`up{job="prometheus"}[2m]`}, "time": {fmt.Sprint(time.Now().Unix())}})
		for _, pts := range got {
			if len(pts) >= 3 {
				first = pts[0][0]
				return nil
			}
		}
		return fmt.Errorf("no samples yet: %v", got)
	})
	// Evaluate half a scrape interval off the scrape grid so that closed
	// (2.42) and left-open (3.x) range boundaries select the same samples.
	start := first + 12.5
	end := start + 10
	// The window is complete once Prometheus has scraped after it and
	// fleetgate has that scrape. fleetgate is asked first: Prometheus is
	// queried only once the window is over, since every query to it moves
	// its own prometheus_http_requests_total, which the window compares (a
	// counter that moves inside the window makes 2.42's and 3.x's rate
	// extrapolation differ on identical samples).
	eventually(t, 60*time.Second, "a scrape after the window in fleetgate and in Prometheus", func() error {
		for _, base := range []string{fg.URL, promURL} {
			last := rawQuery(t, base, url.Values{"query": {`timestamp(up{job="prometheus"})`}}, "cluster", "region")
			if len(last) != 1 {
				return fmt.Errorf("%s: %d series of up", base, len(last))
			}
			for _, pts := range last {
				if len(pts) != 1 || pts[0][1] <= end {
					return fmt.Errorf("%s: last scrape %v, the window ends at %.3f", base, pts, end)
				}
			}
		}
		return nil
	})

	queries := []string{
		`up`,
		`sum(up)`,
		`count by (job) (up)`,
		`rate(prometheus_http_requests_total[10s])`,
		`irate(prometheus_tsdb_head_samples_appended_total[10s])`,
		`increase(prometheus_tsdb_head_samples_appended_total[10s])`,
		`histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))`,
		`topk(3, prometheus_http_requests_total)`,
		`avg_over_time(go_goroutines[10s])`,
		`sum by (handler) (prometheus_http_requests_total)`,
		`max_over_time(scrape_duration_seconds[10s]) > 0`,
	}
	// Remote-write shards may deliver other series of that scrape a little
	// later: the answers must agree within a few batch deadlines.
	eventually(t, 15*time.Second, "fleetgate answers as Prometheus", func() error {
		for _, q := range queries {
			inst := url.Values{"query": {q}, "time": {fmt.Sprintf("%.3f", end)}}
			if err := sameAnswers("instant "+q, rawQuery(t, promURL, inst), rawQuery(t, fg.URL, inst, "cluster", "region")); err != nil {
				return err
			}
			rng := url.Values{"query": {q}, "start": {fmt.Sprintf("%.3f", start)}, "end": {fmt.Sprintf("%.3f", end)}, "step": {"1"}}
			if err := sameAnswers("range "+q, rawQuery(t, promURL, rng), rawQuery(t, fg.URL, rng, "cluster", "region")); err != nil {
				return err
			}
		}
		return nil
	})

	// Every series carries the proven identity.
	got := query(t, fg.URL, `up`, time.Unix(int64(end), 0))
	require.Len(t, got, 1)
	require.Equal(t, "eu-1", got[0].Metric["cluster"])
	require.Equal(t, "eu-west", got[0].Metric["region"])

	// Metadata arrives through remote-write.
	eventually(t, 30*time.Second, "metadata", func() error {
		code, r := apiGet(t, fg.URL, "/api/v1/metadata", url.Values{"metric": {"prometheus_http_requests_total"}})
		if code != 200 || !strings.Contains(string(r.Data), `"counter"`) {
			return fmt.Errorf("metadata %d %s", code, r.Data)
		}
		return nil
	})

	// promtool talks to fleetgate like to any Prometheus.
	promtool := requireBinary(t, "promtool")
	out, err := exec.Command(promtool, "query", "instant", fg.URL, `count by (cluster) (up)`).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), `{cluster="eu-1"} => 1`)
	out, err = exec.Command(promtool, "query", "labels", fg.URL, "cluster").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "eu-1", strings.TrimSpace(string(out)))

	// The registry lists eu-1 verified with its counts, and the silent eu-2.
	code, r := apiGet(t, fg.URL, "/api/v1/clusters", nil)
	require.Equal(t, 200, code)
	var clusters []struct {
		Name     string  `json:"name"`
		Verified bool    `json:"verified"`
		Samples  float64 `json:"samplesReceived"`
		Last     *string `json:"lastWrite"`
	}
	require.NoError(t, json.Unmarshal(r.Data, &clusters))
	require.Len(t, clusters, 2)
	require.Equal(t, "eu-1", clusters[0].Name)
	require.True(t, clusters[0].Verified)
	require.Greater(t, clusters[0].Samples, 100.0)
	require.Equal(t, "eu-2", clusters[1].Name)
	require.Nil(t, clusters[1].Last)

	// Build info answers like Prometheus's.
	code, r = apiGet(t, fg.URL, "/api/v1/status/buildinfo", nil)
	require.Equal(t, 200, code)
	require.Contains(t, string(r.Data), `"version"`)
}

// TestIdentityIsProven: credentials decide the cluster, payloads cannot.
func TestIdentityIsProven(t *testing.T) {
	cfg, _ := twoClusterConfig(t)
	fg := startFleetgate(t, cfg)
	now := time.Now().UnixMilli()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "claimed"}, {Name: "cluster", Value: "eu-2"}},
		Samples: []prompb.Sample{{Timestamp: now, Value: 1}},
	}}}
	code, body := remoteWrite(t, fg.URL, "", req)
	require.Equal(t, 401, code, body)
	code, body = remoteWrite(t, fg.URL, "not-a-token", req)
	require.Equal(t, 401, code, body)
	code, body = remoteWrite(t, fg.URL, "eu-1-secret", req)
	require.Equal(t, 400, code, body)
	require.Contains(t, body, `claimed`)
	require.Contains(t, body, `claims cluster "eu-2"`)
	require.Empty(t, query(t, fg.URL, `claimed`, time.UnixMilli(now)), "nothing of a rejected request is stored")

	// eu-2's own token may write it.
	code, body = remoteWrite(t, fg.URL, "eu-2-secret", req)
	require.Equal(t, 204, code, body)
	got := query(t, fg.URL, `claimed`, time.UnixMilli(now))
	require.Len(t, got, 1)
	require.Equal(t, "eu-2", got[0].Metric["cluster"])

	// Bad PromQL gets Prometheus's error shape.
	code, r := apiGet(t, fg.URL, "/api/v1/query", url.Values{"query": {"sum(("}})
	require.Equal(t, 400, code)
	require.Equal(t, "error", r.Status)
	require.Equal(t, "bad_data", r.ErrorType)

	code, r = apiGet(t, fg.URL, "/api/v1/clusters", nil)
	require.Equal(t, 200, code)
	require.Contains(t, string(r.Data), `"conflict":1`)
}

// TestAcknowledgedSamplesSurviveRestart: every 2xx-acknowledged sample is
// still there after SIGTERM and after SIGKILL.
func TestAcknowledgedSamplesSurviveRestart(t *testing.T) {
	cfg, _ := twoClusterConfig(t)
	fg := startFleetgate(t, cfg)
	base := time.Now().Add(-10 * time.Minute).UnixMilli()
	acked := 0
	write := func(round int) {
		for r := 0; r < 10; r++ {
			req := &prompb.WriteRequest{}
			for s := 0; s < 10; s++ {
				ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "durable_total"}, {Name: "series", Value: strconv.Itoa(s)}}}
				for i := 0; i < 10; i++ {
					n := round*100 + r*10 + i
					ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: base + int64(n)*1000, Value: float64(n)})
				}
				req.Timeseries = append(req.Timeseries, ts)
			}
			code, body := remoteWrite(t, fg.URL, "eu-1-secret", req)
			require.Equal(t, 204, code, body)
			acked += 100
		}
	}
	count := func() int {
		got := query(t, fg.URL, `sum(count_over_time(durable_total[1h]))`, time.Now())
		if len(got) == 0 {
			return 0
		}
		return int(parseVal(t, got[0].Value[1]))
	}
	write(0)
	require.Equal(t, acked, count())
	fg.Restart(t, syscall.SIGTERM)
	require.Equal(t, acked, count(), "after SIGTERM")
	write(1)
	fg.Restart(t, syscall.SIGKILL)
	require.Equal(t, acked, count(), "after SIGKILL")
	require.Equal(t, 2000, acked)
}
