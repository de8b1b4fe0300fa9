//go:build e2e

package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// hookReceiver is a webhook endpoint that checks HMAC signatures.
type hookReceiver struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	fail   bool
	bodies []hookDelivery
	bad    int
}

type hookDelivery struct {
	at       time.Time
	path     string
	event    string
	delivery string
	body     []byte
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail {
		http.Error(w, "receiver is down", http.StatusServiceUnavailable)
		return
	}
	m := hmac.New(sha256.New, []byte(h.secret))
	m.Write(b)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Fleetgate-Signature"))) {
		h.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	h.bodies = append(h.bodies, hookDelivery{at: time.Now(), path: r.URL.Path, event: r.Header.Get("X-Fleetgate-Event"),
		delivery: r.Header.Get("X-Fleetgate-Delivery"), body: b})
}

func (h *hookReceiver) setFail(f bool) {
	h.mu.Lock()
	h.fail = f
	h.mu.Unlock()
}

func (h *hookReceiver) deliveries() []hookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookDelivery(nil), h.bodies...)
}

func startAlertmanager(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "prometheus-alertmanager")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "am.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"), 0o644))
	port := freePort(t)
	p := startProc(t, "alertmanager", bin, "--config.file", cfg, "--storage.path", filepath.Join(dir, "data"),
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--cluster.listen-address=")
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, p, u+"/-/ready", 60*time.Second)
	return u
}

type amAlert struct {
	Labels map[string]string `json:"labels"`
	EndsAt time.Time         `json:"endsAt"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
}

func amAlerts(t *testing.T, am string) []amAlert {
	resp, err := http.Get(am + "/api/v2/alerts")
	require.NoError(t, err)
	defer resp.Body.Close()
	var as []amAlert
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&as))
	return as
}

func promConfig(fg, tokenFile string) string {
	return fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: self
  static_configs: [{targets: [$SELF]}]
remote_write:
- url: %s/api/v1/write
  authorization: {credentials_file: %s}
  queue_config: {batch_send_deadline: 1s}
`, fg, tokenFile)
}

func healthState(t *testing.T, fg, cluster string) (string, float64) {
	code, r := apiGet(t, fg, "/api/v1/clusters/"+cluster+"/health", nil)
	require.Equal(t, 200, code)
	var d struct {
		State string  `json:"state"`
		Score float64 `json:"score"`
	}
	require.NoError(t, json.Unmarshal(r.Data, &d))
	return d.State, d.Score
}

type fgEvent struct {
	ID       uint64           `json:"id"`
	Kind     string           `json:"kind"`
	Cluster  string           `json:"cluster"`
	Reason   string           `json:"reason"`
	Serving  []string         `json:"serving"`
	Evidence []map[string]any `json:"evidence"`
	Time     time.Time        `json:"time"`
}

func fgEvents(t *testing.T, fg string) []fgEvent {
	code, r := apiGet(t, fg, "/api/v1/failover/events", nil)
	require.Equal(t, 200, code)
	var evs []fgEvent
	require.NoError(t, json.Unmarshal(r.Data, &evs))
	return evs
}

// TestFailoverDetectAndSignal: a cluster whose Prometheus stops writing is
// reported down and its failover signal leaves fleetgate within 10 s, at the
// default health settings; Alertmanager receives the alert and its resolve
// on recovery; a webhook receiver gets signed payloads.
func TestFailoverDetectAndSignal(t *testing.T) {
	am := startAlertmanager(t)
	hook := &hookReceiver{t: t, secret: "hook-secret"}
	hsrv := httptest.NewServer(hook)
	defer hsrv.Close()
	secret := writeSecret(t, "hook", hook.secret)
	tok1, tok2 := writeSecret(t, "t1", "token-eu-1"), writeSecret(t, "t2", "token-eu-2")

	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
- {name: eu-1, region: eu, credentials: {bearer_token_file: %s}}
- {name: eu-2, region: eu, credentials: {bearer_token_file: %s}}
failover:
  groups:
  - name: web
    mode: active-passive
    clusters: [eu-1]
    standby: [eu-2]
    # fail-back timing shortened so the test sees the resolve; detection is at defaults
    cooldown: 5s
    hold_down: 5s
    min_dwell: 5s
signals:
  alertmanagers: [{url: %s}]
  webhooks:
  - {name: am4, url: %s/am, format: alertmanager, secret_file: %s}
  - {name: ce, url: %s/ce, format: cloudevents, secret_file: %s}
`, tok1, tok2, am, hsrv.URL, secret, hsrv.URL, secret))

	p1, _ := startPrometheus(t, "prom-eu-1", promConfig(fg.URL, tok1))
	startPrometheus(t, "prom-eu-2", promConfig(fg.URL, tok2))

	eventually(t, 60*time.Second, "both clusters healthy", func() error {
		for _, c := range []string{"eu-1", "eu-2"} {
			if st, sc := healthState(t, fg.URL, c); st != "healthy" {
				return fmt.Errorf("%s is %s (%g)", c, st, sc)
			}
		}
		return nil
	})
	// A few more writes of each cluster establish its write cadence (the
	// stale threshold follows the longest recent gap).
	seen := map[string]map[string]bool{}
	eventually(t, 30*time.Second, "five more writes of each cluster", func() error {
		code, r := apiGet(t, fg.URL, "/api/v1/clusters", nil)
		require.Equal(t, 200, code)
		var cs []struct {
			Name string  `json:"name"`
			Last *string `json:"lastWrite"`
		}
		require.NoError(t, json.Unmarshal(r.Data, &cs))
		for _, c := range cs {
			if seen[c.Name] == nil {
				seen[c.Name] = map[string]bool{}
			}
			if c.Last != nil {
				seen[c.Name][*c.Last] = true
			}
		}
		for _, c := range []string{"eu-1", "eu-2"} {
			if n := len(seen[c]); n < 5 {
				return fmt.Errorf("%s: %d writes seen", c, n)
			}
		}
		return nil
	})
	resp, err := http.Get(fg.URL + "/health/clusters/eu-1")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Empty(t, fgEvents(t, fg.URL), "no decision while everything is healthy")

	stop := time.Now()
	p1.Stop(syscall.SIGKILL)

	// Both moments are measured: poll every 50 ms.
	var downAt, signalAt time.Time
	downAndSignalled := func() bool {
		if downAt.IsZero() {
			if resp, err := http.Get(fg.URL + "/health/clusters/eu-1"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					downAt = time.Now()
				}
			}
		}
		if signalAt.IsZero() {
			for _, d := range hook.deliveries() {
				if d.path == "/ce" && strings.Contains(string(d.body), `"io.fleetgate.failover.failover"`) {
					signalAt = d.at
				}
			}
		}
		return !downAt.IsZero() && !signalAt.IsZero()
	}
	require.Eventually(t, downAndSignalled, time.Until(stop.Add(20*time.Second)), 50*time.Millisecond,
		"eu-1 reported down and the failover signal received within 20 s of the stop")
	t.Logf("MEASURED: stop->reported down %.2fs, stop->failover webhook received %.2fs", downAt.Sub(stop).Seconds(), signalAt.Sub(stop).Seconds())
	require.Less(t, signalAt.Sub(stop), 10*time.Second, "failover signal must leave within 10 s")

	st, _ := healthState(t, fg.URL, "eu-1")
	require.Equal(t, "down", st)
	evs := fgEvents(t, fg.URL)
	require.GreaterOrEqual(t, len(evs), 2)
	require.Equal(t, "drain", evs[0].Kind)
	require.Equal(t, "eu-1", evs[0].Cluster)
	require.Contains(t, evs[0].Reason, "consecutive bad evaluations")
	require.NotEmpty(t, evs[0].Evidence[0]["signals"], "evidence carries the signals")
	require.Equal(t, "failover", evs[1].Kind)
	require.Equal(t, []string{"eu-2"}, evs[1].Serving)

	// Alertmanager has the alerts (checked through its API).
	eventually(t, 10*time.Second, "alertmanager has FleetgateClusterDrained", func() error {
		for _, a := range amAlerts(t, am) {
			if a.Labels["alertname"] == "FleetgateClusterDrained" && a.Labels["cluster"] == "eu-1" && a.Status.State == "active" {
				return nil
			}
		}
		return fmt.Errorf("alerts: %+v", amAlerts(t, am))
	})
	// The Alertmanager-format webhook: version 4, firing.
	var sawAM bool
	for _, d := range hook.deliveries() {
		if d.path == "/am" {
			var msg map[string]any
			require.NoError(t, json.Unmarshal(d.body, &msg))
			require.Equal(t, "4", msg["version"])
			sawAM = true
		}
	}
	require.True(t, sawAM)
	require.Zero(t, hook.bad, "every payload was correctly signed")

	// Drill against the live policy, through the CLI.
	out, err := exec.Command(fleetgateBin, "drill", "--cluster", "eu-2", "--url", fg.URL, "--token-file", fg.AdminTokenFile).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("drill:\n%s", out)
	require.Contains(t, string(out), "group web (active-passive)")
	nEvents := len(fgEvents(t, fg.URL))

	// Recovery: eu-1 writes again; fail-back after the cool-down, alerts resolved.
	p1.Start()
	eventually(t, 60*time.Second, "failback to eu-1", func() error {
		for _, e := range fgEvents(t, fg.URL) {
			if e.Kind == "failback" {
				if len(e.Serving) != 1 || e.Serving[0] != "eu-1" {
					return fmt.Errorf("failback to %v", e.Serving)
				}
				return nil
			}
		}
		return fmt.Errorf("no failback yet")
	})
	require.Greater(t, len(fgEvents(t, fg.URL)), nEvents)
	eventually(t, 15*time.Second, "alertmanager resolved FleetgateClusterDrained", func() error {
		for _, a := range amAlerts(t, am) {
			if a.Labels["alertname"] == "FleetgateClusterDrained" && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
				return fmt.Errorf("still active: %+v", a)
			}
		}
		return nil
	})
}

// TestOutboxSurvivesRestart: signals queued while the receiver is down
// survive a fleetgate crash and are all delivered afterwards (at least once).
func TestOutboxSurvivesRestart(t *testing.T) {
	hook := &hookReceiver{t: t, secret: "s"}
	hook.setFail(true)
	hsrv := httptest.NewServer(hook)
	defer hsrv.Close()
	secret := writeSecret(t, "hook", hook.secret)
	tok1, tok2 := writeSecret(t, "t1", "token-a"), writeSecret(t, "t2", "token-b")
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
- {name: eu-1, credentials: {bearer_token_file: %s}}
- {name: eu-2, credentials: {bearer_token_file: %s}}
failover:
  groups:
  - {name: web, mode: active-active, clusters: [eu-1, eu-2]}
signals:
  retry: {min_backoff: 100ms, max_backoff: 500ms}
  webhooks:
  - {name: ce, url: %s/ce, format: cloudevents, secret_file: %s}
`, tok1, tok2, hsrv.URL, secret))

	// Operator decisions make events and signals without any cluster.
	var ids []uint64
	for i := 0; i < 5; i++ {
		code, body := postJSON(t, fg.URL+"/api/v1/failover/groups/web/freeze", map[string]string{"reason": fmt.Sprint("maintenance ", i)}, admin())
		require.Equal(t, 200, code, "%s", body)
		ids = append(ids, uint64(2*i+1))
		req, _ := http.NewRequest(http.MethodDelete, fg.URL+"/api/v1/failover/groups/web/freeze", nil)
		req.Header = admin()
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		ids = append(ids, uint64(2*i+2))
	}
	// Bad input: 4xx naming the problem.
	code, body := postJSON(t, fg.URL+"/api/v1/failover/groups/web/override", map[string]any{"clusters": []string{"mars"}}, admin())
	require.Equal(t, 400, code)
	require.Contains(t, string(body), "mars")
	code, _ = postJSON(t, fg.URL+"/api/v1/failover/groups/nope/freeze", map[string]any{}, admin())
	require.Equal(t, 404, code)

	eventually(t, 10*time.Second, "retries counted", func() error {
		resp, err := http.Get(fg.URL + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `fleetgate_signal_outbox_pending{sink="webhook:ce"} 10`) ||
			!strings.Contains(string(b), `fleetgate_signal_delivery_failures_total{sink="webhook:ce"}`) {
			return fmt.Errorf("metrics not there yet")
		}
		return nil
	})
	// Crash mid-delivery, receiver comes back while fleetgate restarts.
	fg.Stop(syscall.SIGKILL)
	hook.setFail(false)
	fg.Start()
	waitReady(t, fg.Proc, fg.URL+"/-/ready", 60*time.Second)

	eventually(t, 20*time.Second, "every event delivered", func() error {
		got := map[string]bool{}
		for _, d := range hook.deliveries() {
			got[d.event] = true
		}
		for _, id := range ids {
			if !got[fmt.Sprint(id)] {
				return fmt.Errorf("event %d not delivered (have %v)", id, got)
			}
		}
		return nil
	})
	ds := hook.deliveries()
	t.Logf("MEASURED: %d events, %d deliveries after crash+restart (duplicates allowed: at least once)", len(ids), len(ds))
	// In order per sink.
	var last uint64
	for _, d := range ds {
		var id uint64
		_, err := fmt.Sscan(d.event, &id)
		require.NoError(t, err, "event id %q", d.event)
		require.GreaterOrEqual(t, id, last, "in order")
		last = id
	}
	require.Len(t, fgEvents(t, fg.URL), 10, "the event log survived the crash")
}
