//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// TestFarFutureSampleDoesNotBlindOtherClusters is issue 9's reproduction
// with a real sender: Debian's Prometheus remote-writes for us-1 while eu-1
// sends samples far in the future (and a log line with a negative
// timestamp, and more new series than its limit). eu-1's are refused with a
// 400 naming the bound; us-1's Prometheus keeps writing without a single
// failed sample, before and after a restart.
func TestFarFutureSampleDoesNotBlindOtherClusters(t *testing.T) {
	euTok := writeSecret(t, "eu-1.token", "eu-1-secret")
	usTok := writeSecret(t, "us-1.token", "us-1-secret")
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
  - name: eu-1
    credentials: {bearer_token_file: %s}
    limits: {max_series: 5}
  - name: us-1
    credentials: {bearer_token_file: %s}
`, euTok, usTok))
	_, promURL := startPrometheus(t, "prometheus-us-1", fmt.Sprintf(`
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ['$SELF']}]
remote_write:
  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}
`, fg.URL, usTok))

	// newest is the timestamp of us-1's newest `up` sample in fleetgate.
	newest := func() float64 {
		got := query(t, fg.URL, `timestamp(up{cluster="us-1"})`, time.Now())
		if len(got) == 0 {
			return 0
		}
		return parseVal(t, got[0].Value[1])
	}
	eventually(t, 40*time.Second, "us-1's samples arrive", func() error {
		if newest() == 0 {
			return fmt.Errorf("no us-1 samples yet")
		}
		return nil
	})

	// eu-1 poisons: a year ahead, three hours ahead, MaxInt64.
	now := time.Now()
	for _, ts := range []int64{now.Add(365 * 24 * time.Hour).UnixMilli(), now.Add(3 * time.Hour).UnixMilli(), math.MaxInt64} {
		code, body := remoteWrite(t, fg.URL, "eu-1-secret", &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels: []prompb.Label{{Name: "__name__", Value: "poison"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}},
		}}})
		require.Equal(t, 400, code, body)
		require.Contains(t, body, `series {__name__="poison", cluster="eu-1"}`)
		require.Contains(t, body, "more than ingest.max_future (10m) ahead of now")
	}
	// A Loki line with a negative timestamp: 400, not a 204 for a line never stored.
	push := `{"streams":[{"stream":{"app":"a"},"values":[["-5","never stored"]]}]}`
	req, err := http.NewRequest(http.MethodPost, fg.URL+"/loki/api/v1/push", strings.NewReader(push))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer eu-1-secret")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 400, resp.StatusCode, string(body))
	require.Contains(t, string(body), "is not after 1970-01-01")

	// eu-1 over its series limit: the new series are refused by name of the limit.
	var ts []prompb.TimeSeries
	for i := range 10 {
		ts = append(ts, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "churn"}, {Name: "i", Value: strconv.Itoa(i)}},
			Samples: []prompb.Sample{{Timestamp: now.UnixMilli(), Value: 1}}})
	}
	code, body2 := remoteWrite(t, fg.URL, "eu-1-secret", &prompb.WriteRequest{Timeseries: ts})
	require.Equal(t, 400, code, body2)
	require.Contains(t, body2, "limits.max_series")
	require.Len(t, query(t, fg.URL, `churn`, now), 5)

	// us-1 keeps writing: its newest sample moves on, and Prometheus failed no sample.
	before := newest()
	eventually(t, 20*time.Second, "us-1's samples keep arriving after eu-1's poison", func() error {
		if n := newest(); n < before+3 {
			return fmt.Errorf("newest us-1 sample at %v, was %v", n, before)
		}
		return nil
	})
	failed := func() float64 {
		got := query(t, promURL, `sum(prometheus_remote_storage_samples_failed_total) + sum(prometheus_remote_storage_samples_dropped_total or vector(0))`, time.Now())
		require.Len(t, got, 1)
		return parseVal(t, got[0].Value[1])
	}
	require.Zero(t, failed(), "fleetgate refused none of us-1's samples")
	require.Empty(t, query(t, fg.URL, `poison`, now.Add(365*24*time.Hour)))

	// The registry shows eu-1's refusals, limits and usage.
	_, r := apiGet(t, fg.URL, "/api/v1/clusters", nil)
	require.Contains(t, string(r.Data), `"too_far_in_future":3`)
	require.Contains(t, string(r.Data), `"series_limit":5`)
	require.Contains(t, string(r.Data), `"max_series":5`)
	require.Contains(t, string(r.Data), `"activeSeries":5`)
	mresp, err := http.Get(fg.URL + "/metrics")
	require.NoError(t, err)
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	require.True(t, bytes.Contains(mb, []byte(`fleetgate_cluster_active_series{cluster="eu-1"} 5`)), "active series metric")
	require.True(t, bytes.Contains(mb, []byte(`fleetgate_cluster_limit{cluster="eu-1",limit="max_series"} 5`)), "limit metric")

	// Nothing poisoned survives a restart: us-1 goes on writing.
	fg.Restart(t, syscall.SIGTERM)
	before = newest()
	eventually(t, 30*time.Second, "us-1 writes after a restart", func() error {
		if n := newest(); n < before+2 {
			return fmt.Errorf("newest us-1 sample at %v, was %v", n, before)
		}
		return nil
	})
	require.Zero(t, failed())
	code, body2 = remoteWrite(t, fg.URL, "eu-1-secret", &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels: []prompb.Label{{Name: "__name__", Value: "churn"}, {Name: "i", Value: "0"}}, Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 2}},
	}}})
	require.Equal(t, 204, code, "eu-1's existing series are still accepted: %s", body2)
}
