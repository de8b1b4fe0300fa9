package failover

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/fleetgate/fleetgate/health"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// recordingSink fails the first failN deliveries, then records.
type recordingSink struct {
	mu    sync.Mutex
	failN int
	got   []uint64
	perm  bool
}

func (s *recordingSink) Name() string { return "rec" }
func (s *recordingSink) Payloads(ev Event) ([]json.RawMessage, error) {
	return []json.RawMessage{json.RawMessage(`{"k":"` + ev.Kind + `"}`)}, nil
}
func (s *recordingSink) Deliver(_ context.Context, m *Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perm {
		return ErrPermanent
	}
	if s.failN > 0 {
		s.failN--
		return errors.New("receiver down")
	}
	s.got = append(s.got, m.ID)
	return nil
}
func (s *recordingSink) ids() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.got...)
}

func TestOutboxSurvivesRestartAndRetries(t *testing.T) {
	dir := t.TempDir()
	ob, err := OpenOutbox(dir, time.Millisecond, 5*time.Millisecond, prometheus.NewRegistry(), discard)
	require.NoError(t, err)
	for i := 1; i <= 3; i++ {
		require.NoError(t, ob.Enqueue("rec", uint64(i), time.Now(), json.RawMessage(`{}`)))
	}
	// "Restart": a new outbox over the same directory sees all three.
	ob2, err := OpenOutbox(dir, time.Millisecond, 5*time.Millisecond, nil, discard)
	require.NoError(t, err)
	require.Equal(t, 3, ob2.Pending("rec"))
	require.NoError(t, ob2.Enqueue("rec", 4, time.Now(), json.RawMessage(`{}`)))

	s := &recordingSink{failN: 3}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ob2.Deliver(ctx, s, Standalone{}) }()
	require.Eventually(t, func() bool { return len(s.ids()) == 4 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, []uint64{1, 2, 3, 4}, s.ids(), "in order, each once after the retries")
	require.Zero(t, ob2.Pending("rec"))
	files, err := os.ReadDir(filepath.Join(dir, "rec"))
	require.NoError(t, err, "a missing directory would make the next check pass by itself")
	require.Empty(t, files)
	_, ok := ob2.MeanLatency("rec")
	require.True(t, ok)
}

func TestOutboxNotLeaderDoesNotSend(t *testing.T) {
	ob, err := OpenOutbox(t.TempDir(), time.Millisecond, time.Millisecond, nil, discard)
	require.NoError(t, err)
	require.NoError(t, ob.Enqueue("rec", 1, time.Now(), json.RawMessage(`{}`)))
	s := &recordingSink{}
	// About time passing: a follower delivers nothing for as long as it runs.
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	require.NoError(t, ob.Deliver(ctx, s, notLeader{}))
	require.Empty(t, s.ids())
	require.Equal(t, 1, ob.Pending("rec"))
}

type notLeader struct{}

func (notLeader) IsLeader() bool { return false }

func TestEventLogTornTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenEventLog(p, 0)
	require.NoError(t, err)
	evs, err := l.Append([]Event{{Group: "g", Kind: KindDrain}, {Group: "g", Kind: KindFailover}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), evs[0].ID)
	require.Equal(t, uint64(2), evs[1].ID)
	require.NoError(t, l.Close())
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, _ = f.WriteString(`{"id":3,"group":"g","ki`)
	f.Close()
	l, err = OpenEventLog(p, 0)
	require.NoError(t, err)
	require.Len(t, l.Events(0, "", 0), 2)
	evs, err = l.Append([]Event{{Group: "h", Kind: KindRestore}})
	require.NoError(t, err)
	require.Equal(t, uint64(3), evs[0].ID)
	require.Len(t, l.Events(1, "", 0), 2)
	require.Len(t, l.Events(0, "h", 0), 1)
}

func TestControllerFailoverToSignals(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	var sigs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		sigs = append(sigs, r.Header.Get(SignatureHeader))
		mu.Unlock()
	}))
	defer srv.Close()
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s3cret\n"), 0o600))
	am, err := NewWebhookSink(WebhookConfig{Name: "am", URL: srv.URL, SecretFile: secret}, "http://fg")
	require.NoError(t, err)
	ce, err := NewWebhookSink(WebhookConfig{Name: "ce", URL: srv.URL, Format: FormatCloudEvents}, "http://fg")
	require.NoError(t, err)

	dir := t.TempDir()
	evlog, err := OpenEventLog(filepath.Join(dir, "events.jsonl"), 0)
	require.NoError(t, err)
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), time.Millisecond, time.Millisecond, nil, discard)
	require.NoError(t, err)
	cfg := Config{Groups: []GroupConfig{apGroup()}}
	ctrl, err := NewController(ControllerOptions{Engine: NewEngine(cfg), Log: evlog, Outbox: ob, Sinks: []Sink{am, ce}, Logger: discard})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		ctrl.OnResults(context.Background(), t0.Add(time.Duration(i)*time.Second), results(step{"eu-1": "D", "eu-2": "H", "us-1": "H"}))
	}
	require.Len(t, ctrl.Events(0, "", 0), 2)
	require.Equal(t, 2, ob.Pending("webhook:am"), "drain + failover: one AM payload each")
	require.Equal(t, 2, ob.Pending("webhook:ce"))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ctrl.Run(ctx) }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) == 4 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	mu.Lock()
	defer mu.Unlock()
	var sawAM, sawCE int
	for i, b := range bodies {
		var probe map[string]any
		require.NoError(t, json.Unmarshal(b, &probe))
		if probe["version"] == "4" {
			sawAM++
			require.True(t, hmac.Equal([]byte(Sign([]byte("s3cret"), b)), []byte(sigs[i])), "signature over the exact body")
			var msg AMWebhookMessage
			require.NoError(t, json.Unmarshal(b, &msg))
			require.Equal(t, "firing", msg.Status)
			require.Equal(t, map[string]string{"group": "web"}, msg.GroupLabels)
			require.NotEmpty(t, msg.Alerts)
			require.Equal(t, "web", msg.CommonLabels["group"])
		} else {
			sawCE++
			require.Empty(t, sigs[i], "no secret, no signature")
			var ev CloudEvent
			require.NoError(t, json.Unmarshal(b, &ev))
			require.Equal(t, "1.0", ev.SpecVersion)
			require.Contains(t, []string{"io.fleetgate.failover.drain", "io.fleetgate.failover.failover"}, ev.Type)
			require.Equal(t, "web", ev.Data.Group)
		}
	}
	require.Equal(t, 2, sawAM)
	require.Equal(t, 2, sawCE)
}

func TestAlertmanagerSinkPayloads(t *testing.T) {
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/api/v2/alerts", r.URL.Path)
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got))
	}))
	defer srv.Close()
	s, err := NewAlertmanagerSink(AlertmanagerConfig{URL: srv.URL}, time.Minute, "http://fg")
	require.NoError(t, err)
	ev := Event{ID: 7, Time: time.Now(), Group: "web", Mode: ActivePassive, Kind: KindRestore, Cluster: "eu-1", Serving: []string{"eu-1"}}
	ps, err := s.Payloads(ev)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.NoError(t, s.Deliver(context.Background(), &Message{Payload: ps[0]}))
	require.Len(t, got, 1)
	require.Equal(t, map[string]any{"alertname": AlertClusterDrained, "cluster": "eu-1", "group": "web", "mode": "active-passive", "severity": "critical"}, got[0]["labels"])
	ends, err := time.Parse(time.RFC3339Nano, got[0]["endsAt"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, ev.Time, ends, time.Millisecond, "resolved: ends when the cluster was restored")

	srv400 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad", 400) }))
	defer srv400.Close()
	s, err = NewAlertmanagerSink(AlertmanagerConfig{URL: srv400.URL}, time.Minute, "")
	require.NoError(t, err)
	require.ErrorIs(t, s.Deliver(context.Background(), &Message{Payload: ps[0]}), ErrPermanent)
}

func TestDNSEndpointWriting(t *testing.T) {
	scheme := runtime.NewScheme()
	client := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schemaGVR]string{DNSEndpointGVR: "DNSEndpointList"})
	g := GroupConfig{Name: "web", Mode: ActiveActive, Clusters: []string{"eu-1", "eu-2"},
		DNS: &DNSConfig{Namespace: "fleet", Hostname: "web.example.com", TTL: 10,
			Targets: map[string][]string{"eu-1": {"10.0.0.1"}, "eu-2": {"10.0.0.2", "10.0.0.3"}}}}
	cfg := Config{Groups: []GroupConfig{g}}
	require.NoError(t, cfg.Validate())
	s := NewDNSSink(client, cfg)
	ctx := context.Background()

	ps, err := s.Payloads(Event{Group: "web", Kind: KindFailover, Serving: []string{"eu-1", "eu-2"}, Weights: map[string]int{"eu-1": 100, "eu-2": 60}})
	require.NoError(t, err)
	require.NoError(t, s.Deliver(ctx, &Message{Payload: ps[0]}))
	obj, err := client.Resource(DNSEndpointGVR).Namespace("fleet").Get(ctx, "fleetgate-web", metav1.GetOptions{})
	require.NoError(t, err)
	eps, _, _ := unstructured.NestedSlice(obj.Object, "spec", "endpoints")
	require.Len(t, eps, 2)
	e2 := eps[1].(map[string]any)
	require.Equal(t, "web.example.com", e2["dnsName"])
	require.Equal(t, "eu-2", e2["setIdentifier"])
	require.Equal(t, int64(10), e2["recordTTL"])
	require.Equal(t, []any{"10.0.0.2", "10.0.0.3"}, e2["targets"])
	require.Equal(t, []any{map[string]any{"name": "aws/weight", "value": "60"}}, e2["providerSpecific"])

	// eu-1 drained: only healthy clusters' targets remain (update path).
	ps, err = s.Payloads(Event{Group: "web", Kind: KindFailover, Serving: []string{"eu-2"}, Weights: map[string]int{"eu-2": 100}})
	require.NoError(t, err)
	require.NoError(t, s.Deliver(ctx, &Message{Payload: ps[0]}))
	obj, err = client.Resource(DNSEndpointGVR).Namespace("fleet").Get(ctx, "fleetgate-web", metav1.GetOptions{})
	require.NoError(t, err)
	eps, _, _ = unstructured.NestedSlice(obj.Object, "spec", "endpoints")
	require.Len(t, eps, 1)
	require.Equal(t, "eu-2", eps[0].(map[string]any)["setIdentifier"])
	require.Equal(t, "fleetgate", obj.GetLabels()["app.kubernetes.io/managed-by"])

	// At start the live state is published.
	sy, err := s.SyncPayloads([]GroupStatus{{Name: "web", Serving: []string{"eu-1"}, Weights: map[string]int{"eu-1": 100}}, {Name: "other", Serving: []string{"x"}}})
	require.NoError(t, err)
	require.Len(t, sy, 1)
	require.NoError(t, s.Deliver(ctx, &Message{Payload: sy[0]}))
	obj, err = client.Resource(DNSEndpointGVR).Namespace("fleet").Get(ctx, "fleetgate-web", metav1.GetOptions{})
	require.NoError(t, err)
	eps, _, _ = unstructured.NestedSlice(obj.Object, "spec", "endpoints")
	require.Len(t, eps, 1)
	require.Equal(t, "eu-1", eps[0].(map[string]any)["setIdentifier"])

	// Events that do not move traffic write nothing.
	ps, err = s.Payloads(Event{Group: "web", Kind: KindDrain, Serving: []string{"eu-2"}})
	require.NoError(t, err)
	require.Empty(t, ps)
}

func TestLeaseLeaderElection(t *testing.T) {
	cs := k8sfake.NewClientset()
	cfg := LeaderElectionConfig{Enabled: true, Namespace: "fleet", LeaseDuration: mdur(2 * time.Second),
		RenewDeadline: mdur(time.Second), RetryPeriod: mdur(100 * time.Millisecond)}
	require.NoError(t, cfg.Validate())
	a := NewLeaseLeader(cfg, cs, "a", discard)
	b := NewLeaseLeader(cfg, cs, "b", discard)
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	doneA, doneB := make(chan error), make(chan error)
	go func() { doneA <- a.Run(ctxA) }()
	require.Eventually(t, a.IsLeader, 5*time.Second, 20*time.Millisecond)
	go func() { doneB <- b.Run(ctxB) }()
	// About time passing: b keeps trying (every retry period, 100ms) and
	// must not lead while a holds the lease.
	require.Never(t, b.IsLeader, 500*time.Millisecond, 10*time.Millisecond, "only one replica leads")
	require.True(t, a.IsLeader())
	lease, err := cs.CoordinationV1().Leases("fleet").Get(context.Background(), "fleetgate-signals", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "a", *lease.Spec.HolderIdentity)

	cancelA() // releases the lease on cancel
	require.NoError(t, <-doneA)
	require.False(t, a.IsLeader())
	require.Eventually(t, b.IsLeader, 10*time.Second, 20*time.Millisecond, "b takes over")
	cancelB()
	require.NoError(t, <-doneB)

	bad := LeaderElectionConfig{Enabled: true}
	require.ErrorContains(t, bad.Validate(), "namespace: empty")
}

func TestDrillDoesNotEmit(t *testing.T) {
	dir := t.TempDir()
	evlog, err := OpenEventLog(filepath.Join(dir, "events.jsonl"), 0)
	require.NoError(t, err)
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), time.Millisecond, time.Millisecond, nil, discard)
	require.NoError(t, err)
	sink := &recordingSink{}
	ctrl, err := NewController(ControllerOptions{Engine: NewEngine(Config{Groups: []GroupConfig{apGroup()}}), Log: evlog, Outbox: ob, Sinks: []Sink{sink}, Logger: discard})
	require.NoError(t, err)
	hv := fakeHealth{results: results(step{"eu-1": "H", "eu-2": "H", "us-1": "H"}), stale: 3 * time.Second}
	ctrl.OnResults(context.Background(), time.Now(), hv.results)
	rep, err := ctrl.Drill(context.Background(), hv, nil, "eu-1")
	require.NoError(t, err)
	require.Len(t, rep.Groups, 1)
	g := rep.Groups[0]
	require.Equal(t, []string{"eu-1"}, g.ServingBefore)
	require.Equal(t, []string{"eu-2"}, g.ServingAfter)
	require.InDelta(t, 3.25, rep.DetectSeconds, 0.001)
	require.InDelta(t, 5.25, *g.DecideSeconds, 0.001, "detect + (N-1) suspect intervals")
	require.Equal(t, []string{"rec"}, g.Signals)
	require.Empty(t, ctrl.Events(0, "", 0), "a drill logs nothing")
	require.Zero(t, ob.Pending("rec"), "and queues nothing")
	require.Equal(t, []string{"eu-1"}, ctrl.Status()[0].Serving, "the live engine is untouched")
}

type fakeHealth struct {
	results []health.Result
	stale   time.Duration
}

func (f fakeHealth) Results() []health.Result        { return f.results }
func (f fakeHealth) StaleAfter(string) time.Duration { return f.stale }
func (f fakeHealth) Config() health.Config           { return health.Config{}.WithDefaults() }

type schemaGVR = schema.GroupVersionResource

func mdur(d time.Duration) model.Duration { return model.Duration(d) }

func TestDrillCapacityHeadroom(t *testing.T) {
	st := promqltest.LoadedStorage(t, `
load 1m
  kube_pod_container_resource_requests{cluster="eu-1",resource="cpu",pod="a"} 6
  kube_pod_container_resource_requests{cluster="eu-1",resource="memory",pod="a"} 6e9
  kube_pod_container_resource_requests{cluster="eu-2",resource="cpu",pod="b"} 4
  kube_pod_container_resource_requests{cluster="eu-2",resource="memory",pod="b"} 4e9
  kube_node_status_allocatable{cluster="eu-2",resource="cpu",node="n"} 8
  kube_node_status_allocatable{cluster="eu-2",resource="memory",node="n"} 16e9
`)
	q := health.NewEngineQuerier(promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery), st)
	dir := t.TempDir()
	evlog, err := OpenEventLog(filepath.Join(dir, "events.jsonl"), 0)
	require.NoError(t, err)
	ob, err := OpenOutbox(filepath.Join(dir, "outbox"), time.Millisecond, time.Millisecond, nil, discard)
	require.NoError(t, err)
	ctrl, err := NewController(ControllerOptions{Engine: NewEngine(Config{Groups: []GroupConfig{apGroup()}}), Log: evlog, Outbox: ob, Logger: discard})
	require.NoError(t, err)
	ctrl.now = func() time.Time { return time.Unix(30, 0) }
	hv := fakeHealth{results: results(step{"eu-1": "H", "eu-2": "H", "us-1": "H"}), stale: 3 * time.Second}
	ctrl.OnResults(context.Background(), time.Unix(30, 0), hv.results)
	rep, err := ctrl.Drill(context.Background(), hv, q, "eu-1")
	require.NoError(t, err)
	require.Equal(t, []string{"eu-2"}, rep.Groups[0].ServingAfter)
	require.Len(t, rep.Capacity, 2)
	cpu := rep.Capacity[0]
	require.Equal(t, "cpu", cpu.Resource)
	require.Equal(t, 6.0, cpu.Absorbed, "eu-2 takes all of eu-1's requests")
	require.Equal(t, -2.0, *cpu.Headroom, "8 allocatable - 4 requested - 6 absorbed")
	require.Equal(t, 6e9, *rep.Capacity[1].Headroom)
	require.Contains(t, rep.Notes[len(rep.Notes)-1], "eu-2 would be short of cpu")
}

func TestEventLogCompaction(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenEventLog(p, 3)
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		_, err := l.Append([]Event{{Group: "g", Kind: KindWeights}})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	l, err = OpenEventLog(p, 3)
	require.NoError(t, err)
	evs := l.Events(0, "", 0)
	require.LessOrEqual(t, len(evs), 3)
	require.Equal(t, uint64(10), evs[len(evs)-1].ID)
	got, err := l.Append([]Event{{Group: "g"}})
	require.NoError(t, err)
	require.Equal(t, uint64(11), got[0].ID, "ids keep growing across compaction")
}
