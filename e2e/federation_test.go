//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// haStatus is /api/v1/ha.
type haStatus struct {
	Enabled bool `json:"enabled"`
	Groups  []struct {
		Cluster string `json:"cluster"`
		Elected string `json:"elected"`
		History []struct {
			Time   time.Time `json:"time"`
			From   string    `json:"from"`
			To     string    `json:"to"`
			Reason string    `json:"reason"`
		} `json:"history"`
	} `json:"groups"`
}

func getHA(t *testing.T, base string) haStatus {
	t.Helper()
	code, r := apiGet(t, base, "/api/v1/ha", nil)
	require.Equal(t, 200, code)
	var st haStatus
	require.NoError(t, json.Unmarshal(r.Data, &st))
	return st
}

// seriesKey renders a metric's labels in a stable form.
func seriesKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, m[k])
	}
	return b.String()
}

// rawSamples returns the raw sample timestamps (ms) of every series matching sel in (end-window, end].
func rawSamples(t *testing.T, base, sel string, end time.Time, window time.Duration) map[string][]int64 {
	t.Helper()
	out := map[string][]int64{}
	for _, s := range query(t, base, fmt.Sprintf("%s[%dms]", sel, window.Milliseconds()), end) {
		var ts []int64
		for _, v := range s.Values {
			f, _ := v[0].(float64)
			ts = append(ts, int64(f*1000+0.5))
		}
		out[seriesKey(s.Metric)] = ts
	}
	return out
}

// TestFederation: two Debian Prometheus servers play two clusters. eu-1 is
// read at query time over remote-read; us-1 is an HA pair of two servers
// (external label replica=a|b) remote-writing into fleetgate, which keeps
// one replica.
func TestFederation(t *testing.T) {
	const failover = 5 * time.Second
	eu, euURL := startPrometheus(t, "prometheus-eu-1", `
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: self
    static_configs: [{targets: ['$SELF']}]
`)
	euAddr := strings.TrimPrefix(euURL, "http://")
	token := writeSecret(t, "us-1.token", "us-1-secret-token")
	// A plain store that keeps both replicas (what a Thanos Query or Mimir
	// without HA tracking holds), read by fleetgate as cluster us-1-raw.
	raw := startFleetgate(t, "")
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: eu-1
    region: eu
    query: {type: remote_read, url: %s/api/v1/read, timeout: 3s, probe_interval: 1s}
  - name: us-1
    credentials: {bearer_token_file: %s}
  - name: us-1-raw
    query: {type: prometheus, url: %s, replica_labels: [replica], probe_interval: 1s}
ha:
  enabled: true
  failover_timeout: %s
`, euURL, token, raw.URL, model(failover)))
	fgAddr := strings.TrimPrefix(fg.URL, "http://")
	pair := func(replica string) string {
		return fmt.Sprintf(`
global:
  scrape_interval: 1s
  external_labels: {replica: %s}
scrape_configs:
  - job_name: pair
    static_configs: [{targets: ['%s', '%s']}]
    # fleetgate's own metrics carry cluster labels of other clusters.
    metric_relabel_configs: [{source_labels: [cluster], regex: '.+', action: drop}]
remote_write:
  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    queue_config: {batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}
  - url: %s/api/v1/write
    queue_config: {batch_send_deadline: 500ms}
`, replica, fgAddr, euAddr, fg.URL, token, raw.URL)
	}
	replicas := map[string]*Proc{}
	replicaURL := map[string]string{}
	for _, r := range []string{"a", "b"} {
		replicas[r], replicaURL[r] = startPrometheus(t, "prometheus-us-1-"+r, pair(r))
	}

	// Wait until both clusters answer through fleetgate at now-2s, the time
	// the subtests below evaluate at.
	eventually(t, 60*time.Second, "both clusters visible", func() error {
		got := map[string]int{}
		for _, s := range query(t, fg.URL, "up", time.Now().Add(-2*time.Second)) {
			got[s.Metric["cluster"]]++
		}
		if got["eu-1"] != 1 || got["us-1"] != 2 || got["us-1-raw"] != 2 {
			return fmt.Errorf("up series by cluster: %v", got)
		}
		return nil
	})

	t.Run("federated answer equals the union of the clusters' own answers", func(t *testing.T) {
		for _, q := range []string{"up", `prometheus_build_info`, `count by (job) (up)`} {
			ts := time.Now().Add(-2 * time.Second)
			want := map[string]string{}
			for _, s := range query(t, euURL, q, ts) {
				m := s.Metric
				if _, grouped := m["job"]; !strings.HasPrefix(q, "count") || grouped {
					m["cluster"], m["region"] = "eu-1", "eu"
				}
				want[seriesKey(m)] = fmt.Sprint(s.Value[1])
			}
			elected := getHA(t, fg.URL).Groups[0].Elected
			for _, s := range query(t, replicaURL[elected], q, ts) {
				m := s.Metric
				if !strings.HasPrefix(q, "count") {
					m["cluster"] = "us-1"
				}
				want[seriesKey(m)] = fmt.Sprint(s.Value[1])
			}
			if strings.HasPrefix(q, "count") {
				// count by (job): clusters do not share jobs, so this is a plain union.
				want = map[string]string{}
				for _, s := range query(t, euURL, q, ts) {
					want[seriesKey(s.Metric)] = fmt.Sprint(s.Value[1])
				}
				for _, s := range query(t, replicaURL[elected], q, ts) {
					want[seriesKey(s.Metric)] = fmt.Sprint(s.Value[1])
				}
			}
			got := map[string]string{}
			for _, s := range query(t, fg.URL, withoutRaw(q), ts) {
				got[seriesKey(s.Metric)] = fmt.Sprint(s.Value[1])
			}
			require.Equal(t, want, got, "query %s", q)
		}
	})

	t.Run("sum(up) counts every cluster", func(t *testing.T) {
		ts := time.Now().Add(-2 * time.Second)
		euSum := query(t, euURL, "sum(up)", ts)[0].Value[1]
		usSum := query(t, replicaURL["a"], "sum(up)", ts)[0].Value[1]
		require.Equal(t, "1", euSum)
		require.Equal(t, "2", usSum)
		got := query(t, fg.URL, `sum(up{cluster!="us-1-raw"})`, ts)
		require.Len(t, got, 1)
		require.Equal(t, "3", got[0].Value[1])
		got = query(t, fg.URL, `sum(up)`, ts)
		require.Equal(t, "5", got[0].Value[1], "eu-1 1 + us-1 2 + us-1-raw 2 (deduplicated)")
		byCluster := map[string]string{}
		for _, s := range query(t, fg.URL, "sum by (cluster) (up)", ts) {
			byCluster[s.Metric["cluster"]] = fmt.Sprint(s.Value[1])
		}
		require.Equal(t, map[string]string{"eu-1": "1", "us-1": "2", "us-1-raw": "2"}, byCluster)
	})

	t.Run("query-time dedup merges the replicas of a remote source (Thanos dedup, replicaLabels[])", func(t *testing.T) {
		// Prometheus 2.42 ships its WAL to remote-write in bursts, so wait
		// until a 20s window in the past is complete.
		var windowEnd time.Time
		eventually(t, 60*time.Second, "deduplicated series at one replica's rate", func() error {
			ts := time.Now().Add(-16 * time.Second)
			windowEnd = ts
			n := query(t, fg.URL, fmt.Sprintf(`count_over_time(up{cluster="us-1-raw",instance=%q}[20s])`, fgAddr), ts)
			nd := query(t, raw.URL, fmt.Sprintf(`count_over_time(up{instance=%q}[20s])`, fgAddr), ts)
			if len(n) != 1 || len(nd) != 2 {
				return fmt.Errorf("series: %d deduplicated, %d raw", len(n), len(nd))
			}
			c, _ := strconv.Atoi(fmt.Sprint(n[0].Value[1]))
			ca, _ := strconv.Atoi(fmt.Sprint(nd[0].Value[1]))
			cb, _ := strconv.Atoi(fmt.Sprint(nd[1].Value[1]))
			if ca < 19 || cb < 19 {
				return fmt.Errorf("replicas not complete yet: %d, %d samples", ca, cb)
			}
			t.Logf("20s window: replicas have %d and %d samples, the deduplicated series %d", ca, cb, c)
			require.InDelta(t, 20, c, 2, "one replica's sampling rate, not both")
			return nil
		})
		ts := windowEnd
		sel := `up{cluster="us-1-raw"}`
		require.Len(t, query(t, fg.URL, sel, ts), 2, "deduplicated by default: one series per target")
		code, r := apiGet(t, fg.URL, "/api/v1/query", url.Values{"query": {sel}, "dedup": {"false"}, "time": {fmt.Sprintf("%.3f", float64(ts.UnixMilli())/1000)}})
		require.Equal(t, 200, code)
		var d queryData
		require.NoError(t, json.Unmarshal(r.Data, &d))
		var res []promSeries
		require.NoError(t, json.Unmarshal(d.Result, &res))
		require.Len(t, res, 4, "dedup=false: both replicas")
		for _, s := range res {
			require.Contains(t, []string{"a", "b"}, s.Metric["replica"])
		}
		// replicaLabels[] overrides the configured replica labels.
		code, r = apiGet(t, fg.URL, "/api/v1/query", url.Values{"query": {sel}, "replicaLabels[]": {"instance"}, "time": {fmt.Sprintf("%.3f", float64(ts.UnixMilli())/1000)}})
		require.Equal(t, 200, code)
		require.NoError(t, json.Unmarshal(r.Data, &d))
		require.NoError(t, json.Unmarshal(d.Result, &res))
		require.Len(t, res, 2, "merged across instances instead of replicas")
	})

	t.Run("killing the elected HA replica fails over within the timeout, without a larger gap", func(t *testing.T) {
		st := getHA(t, fg.URL)
		require.True(t, st.Enabled)
		require.Len(t, st.Groups, 1)
		elected := st.Groups[0].Elected
		other := map[string]string{"a": "b", "b": "a"}[elected]
		require.NotEmpty(t, other, "elected %q", elected)

		killed := time.Now()
		replicas[elected].Stop(syscall.SIGKILL)
		var tookOver time.Time
		eventually(t, failover+10*time.Second, "the other replica is elected", func() error {
			st := getHA(t, fg.URL)
			if st.Groups[0].Elected != other {
				return fmt.Errorf("still %s", st.Groups[0].Elected)
			}
			h := st.Groups[0].History
			tookOver = h[len(h)-1].Time
			require.Equal(t, "failover", h[len(h)-1].Reason)
			return nil
		})
		took := tookOver.Sub(killed)
		t.Logf("killed %s at %s, %s elected after %s (failover_timeout %s)", elected, killed.Format(time.RFC3339Nano), other, took, failover)
		// The election happens on the first push of the other replica after
		// the timeout; Prometheus 2.42 pushes in bursts of up to a few seconds.
		require.LessOrEqual(t, took, failover+2*time.Second)

		// Gaps in a series both replicas scrape (fleetgate's own up), once
		// the new replica's samples after the takeover have arrived.
		sel := fmt.Sprintf(`up{cluster="us-1",instance=%q}`, fgAddr)
		eventually(t, 30*time.Second, "samples of the new replica after the takeover", func() error {
			for _, ts := range rawSamples(t, fg.URL, sel, time.Now(), 60*time.Second) {
				if len(ts) > 0 && ts[len(ts)-1] >= tookOver.Add(3*time.Second).UnixMilli() {
					return nil
				}
			}
			return fmt.Errorf("no sample 3s after the takeover at %s yet", tookOver.Format(time.RFC3339Nano))
		})
		series := rawSamples(t, fg.URL, sel, time.Now(), 60*time.Second)
		require.Len(t, series, 1, "one series across the failover: the replica label is dropped")
		for _, ts := range series {
			var maxGap time.Duration
			for i := 1; i < len(ts); i++ {
				maxGap = max(maxGap, time.Duration(ts[i]-ts[i-1])*time.Millisecond)
			}
			t.Logf("largest gap between samples across the failover: %s", maxGap)
			// The election is decided on arrival time, but the new
			// replica's samples dropped before it were kept (ha
			// backfill_max_samples) and appended on takeover: what is left
			// is about a scrape interval, never more than failover_timeout.
			require.LessOrEqual(t, maxGap, failover, "gap larger than failover_timeout")
		}
		resp, err := http.Get(fg.URL + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		var backfilled float64
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
			if v, ok := strings.CutPrefix(sc.Text(), `fleetgate_ha_backfilled_samples_total{cluster="us-1"} `); ok {
				backfilled, _ = strconv.ParseFloat(v, 64)
			}
		}
		t.Logf("backfilled samples: %v", backfilled)
		require.Positive(t, backfilled, "the gap was filled by the backfill")
	})

	t.Run("a stopped cluster is a warning naming it, an error with partial_response=false", func(t *testing.T) {
		eu.Stop(syscall.SIGTERM)
		eventually(t, 20*time.Second, "eu-1 reported missing", func() error {
			code, r := apiGet(t, fg.URL, "/api/v1/query", url.Values{"query": {`sum(up{cluster!="us-1-raw"})`}})
			if code != 200 {
				return fmt.Errorf("status %d: %s", code, r.Error)
			}
			if len(r.Warnings) == 0 || !strings.Contains(strings.Join(r.Warnings, " "), `cluster "eu-1"`) {
				return fmt.Errorf("warnings %v", r.Warnings)
			}
			var d queryData
			require.NoError(t, json.Unmarshal(r.Data, &d))
			require.Contains(t, string(d.Result), `"2"`, "us-1 still answers")
			return nil
		})
		code, r := apiGet(t, fg.URL, "/api/v1/query", url.Values{"query": {"sum(up)"}, "partial_response": {"false"}})
		require.NotEqual(t, 200, code)
		require.Less(t, code, 500, "an upstream outage is not an internal error")
		require.Equal(t, "error", r.Status)
		require.Contains(t, r.Error, `cluster "eu-1"`)

		// The probe marks the source down, so queries do not wait for it.
		eventually(t, 10*time.Second, "eu-1 marked down", func() error {
			code, r := apiGet(t, fg.URL, "/api/v1/sources", nil)
			require.Equal(t, 200, code)
			if !strings.Contains(string(r.Data), `"up":false`) {
				return fmt.Errorf("sources: %s", r.Data)
			}
			return nil
		})
		start := time.Now()
		code, r = apiGet(t, fg.URL, "/api/v1/query", url.Values{"query": {"sum(up)"}})
		require.Equal(t, 200, code)
		require.Less(t, time.Since(start), time.Second)
		require.Contains(t, strings.Join(r.Warnings, " "), "marked down")
	})

	t.Run("manual pin", func(t *testing.T) {
		// A replica never seen is refused unless forced.
		code, body := postJSON(t, fg.URL+"/api/v1/ha/us-1/pin", map[string]any{"replica": "z"}, admin())
		require.Equal(t, 400, code, "%s", body)
		require.Contains(t, string(body), "never seen")
		code, body = postJSON(t, fg.URL+"/api/v1/ha/us-1/pin", map[string]any{"replica": "z", "force": true}, admin())
		require.Equal(t, 200, code, "%s", body)
		require.Equal(t, "z", getHA(t, fg.URL).Groups[0].Elected)
		code, _ = postJSON(t, fg.URL+"/api/v1/ha/nope/pin", map[string]any{"replica": "z"}, admin())
		require.Equal(t, 404, code)
		code, _ = postJSON(t, fg.URL+"/api/v1/ha/us-1/pin", map[string]any{}, admin())
		require.Equal(t, 400, code)
		// Without the admin's token nothing is pinned.
		code, _ = postJSON(t, fg.URL+"/api/v1/ha/us-1/pin", map[string]any{"unpin": true}, nil)
		require.Equal(t, 401, code)
	})
}

// withoutRaw restricts q to the clusters the union test compares.
func withoutRaw(q string) string {
	switch q {
	case "up":
		return `up{cluster!="us-1-raw"}`
	case "prometheus_build_info":
		return `prometheus_build_info{cluster!="us-1-raw"}`
	}
	return `count by (job) (up{cluster!="us-1-raw"})`
}

func model(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// vmExport counts the raw samples VictoriaMetrics holds for sel in [start, end], by series.
func vmExport(t *testing.T, vmURL, sel string, start, end time.Time) map[string][]int64 {
	t.Helper()
	u := fmt.Sprintf("%s/api/v1/export?%s", vmURL, url.Values{
		"match[]": {sel}, "start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)},
	}.Encode())
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	out := map[string][]int64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Metric     map[string]string `json:"metric"`
			Timestamps []int64           `json:"timestamps"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		out[seriesKey(line.Metric)] = line.Timestamps
	}
	require.NoError(t, sc.Err())
	return out
}

// TestForward: every accepted series goes on to Debian victoria-metrics
// through the WAL-backed queue, with its cluster label; stopping
// VictoriaMetrics for a minute loses nothing.
func TestForward(t *testing.T) {
	vmBin := requireBinary(t, "victoria-metrics")
	vmPort := freePort(t)
	vmURL := fmt.Sprintf("http://127.0.0.1:%d", vmPort)
	vm := startProc(t, "victoria-metrics", vmBin,
		"-httpListenAddr", fmt.Sprintf("127.0.0.1:%d", vmPort),
		"-storageDataPath", filepath.Join(t.TempDir(), "vm"),
		"-search.latencyOffset", "0s", "-search.disableCache", "-retentionPeriod", "1")
	waitReady(t, vm, vmURL+"/health", 60*time.Second)

	token := writeSecret(t, "us-2.token", "us-2-secret-token")
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: us-2
    region: us
    credentials: {bearer_token_file: %s}
forward:
  destinations:
    - name: vm
      url: %s/api/v1/write
      queue: {batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 2s}
`, token, vmURL))
	fgAddr := strings.TrimPrefix(fg.URL, "http://")
	// A second fleetgate in forward-only mode: no embedded TSDB, an agent
	// WAL drained into VictoriaMetrics, queries answered by VictoriaMetrics.
	fgOnly := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: us-3
    credentials: {bearer_token_file: %s}
storage:
  embedded: false
forward:
  destinations:
    - name: vm
      url: %s/api/v1/write
      queue: {batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 2s}
  query: {type: prometheus, url: %s, probe_interval: 1s}
`, token, vmURL, vmURL))
	_, promURL := startPrometheus(t, "prometheus-us-2", fmt.Sprintf(`
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: fleetgate
    static_configs: [{targets: ['%s']}]
    metric_relabel_configs: [{source_labels: [cluster], regex: '.+', action: drop}]
remote_write:
  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    queue_config: {batch_send_deadline: 500ms}
  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    queue_config: {batch_send_deadline: 500ms}
`, fgAddr, fg.URL, token, fgOnly.URL, token))

	sel := `up{cluster="us-2"}`
	eventually(t, 60*time.Second, "forwarded data queryable in VictoriaMetrics with its cluster label", func() error {
		code, r := apiGet(t, vmURL, "/api/v1/query", url.Values{"query": {sel}})
		if code != 200 {
			return fmt.Errorf("status %d", code)
		}
		var d queryData
		require.NoError(t, json.Unmarshal(r.Data, &d))
		var res []promSeries
		require.NoError(t, json.Unmarshal(d.Result, &res))
		if len(res) != 1 || res[0].Metric["cluster"] != "us-2" || res[0].Metric["region"] != "us" {
			return fmt.Errorf("VictoriaMetrics answers %s", d.Result)
		}
		return nil
	})

	start := time.Now()
	vm.Stop(syscall.SIGTERM)
	t.Log("victoria-metrics stopped for a minute")
	time.Sleep(time.Minute) // the test is about an outage of this length: fleetgate queues meanwhile
	vm.Start()
	waitReady(t, vm, vmURL+"/health", 60*time.Second)
	end := time.Now()
	t.Log("victoria-metrics started again")

	// Everything fleetgate accepted in [start, end] reaches VictoriaMetrics.
	eventually(t, 90*time.Second, "no sample lost while VictoriaMetrics was down", func() error {
		want := rawSamples(t, fg.URL, sel, end, end.Sub(start))
		got := vmExport(t, vmURL, sel, start, end)
		if len(want) != 1 {
			return fmt.Errorf("fleetgate has %d series", len(want))
		}
		for k, ts := range want {
			var inRange []int64
			for _, x := range ts {
				if x >= start.Unix()*1000 && x <= end.Unix()*1000 {
					inRange = append(inRange, x)
				}
			}
			vmTS := got[k]
			if len(vmTS) < len(inRange) {
				return fmt.Errorf("series %s: fleetgate has %d samples, VictoriaMetrics %d", k, len(inRange), len(vmTS))
			}
			have := map[int64]bool{}
			for _, x := range vmTS {
				have[x] = true
			}
			for _, x := range inRange {
				if !have[x] {
					return fmt.Errorf("series %s: sample at %d missing in VictoriaMetrics", k, x)
				}
			}
			t.Logf("series %s: %d samples in the window, all in VictoriaMetrics", k, len(inRange))
		}
		return nil
	})

	// Forward-only mode: the source Prometheus's own samples all reach
	// VictoriaMetrics through the agent WAL, and fleetgate's query API
	// answers from VictoriaMetrics.
	eventually(t, 90*time.Second, "forward-only fleetgate lost nothing", func() error {
		src := rawSamples(t, promURL, "up", end, end.Sub(start))
		got := vmExport(t, vmURL, `up{cluster="us-3"}`, start, end)
		if len(src) != 1 || len(got) != 1 {
			return fmt.Errorf("series: source %d, VictoriaMetrics %d", len(src), len(got))
		}
		have := map[int64]bool{}
		for _, ts := range got {
			for _, x := range ts {
				have[x] = true
			}
		}
		n := 0
		for _, ts := range src {
			for _, x := range ts {
				if x >= start.Unix()*1000 && x <= end.Unix()*1000 {
					n++
					if !have[x] {
						return fmt.Errorf("sample at %d missing in VictoriaMetrics", x)
					}
				}
			}
		}
		t.Logf("forward-only: %d source samples in the window, all in VictoriaMetrics", n)
		return nil
	})
	res := query(t, fgOnly.URL, `up{cluster="us-3"}`, time.Now())
	require.Len(t, res, 1, "forward-only fleetgate answers from the backend")
	code, r := apiGet(t, fgOnly.URL, "/api/v1/status/tsdb", nil)
	require.NotEqual(t, 200, code, "no embedded TSDB: %s", r.Data)
}
