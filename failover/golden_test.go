package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/health"
)

// Known-answer tests of what fleetgate sends: the bodies and headers are
// compared with files under testdata/signals/ (described field by field in
// testdata/signals/README.md), not decoded into the sink's own types.
// `go test ./failover -run Golden -update` rewrites the goldens; read the
// diff before committing it.
var update = flag.Bool("update", false, "rewrite the golden files under testdata/signals")

// goldenSecret signs the webhook goldens.
const goldenSecret = "fleetgate-golden-secret"

// goldenTime is the decision time of every golden event.
var goldenTime = time.Date(2025, 3, 14, 15, 9, 26, 535000000, time.UTC)

// goldenFailover: eu-1 is drained and traffic of the active-passive group
// web moves to eu-2.
func goldenFailover() Event {
	return Event{ID: 42, Time: goldenTime, Group: "web", Mode: ActivePassive, Kind: KindFailover,
		Reason: "eu-1 bad for 3 evaluations; eu-2 is the next healthy cluster",
		Evidence: []Evidence{{Cluster: "eu-1", State: health.Down, Score: 12.5, BadStreak: 3,
			Reason: "signal up is critical and bad"}},
		Serving: []string{"eu-2"}, Weights: map[string]int{"eu-2": 100}, Drained: []string{"eu-1"}}
}

// goldenRestore: eu-1 is healthy again and restored.
func goldenRestore() Event {
	return Event{ID: 43, Time: goldenTime.Add(10 * time.Minute), Group: "web", Mode: ActivePassive, Kind: KindRestore,
		Cluster: "eu-1", Reason: "eu-1 good for 5 evaluations", Serving: []string{"eu-1"},
		Weights: map[string]int{"eu-1": 100}, Drained: []string{}}
}

// captured is one request a test receiver saw.
type captured struct {
	path   string
	header http.Header
	body   []byte
}

func captureServer(t *testing.T) (*httptest.Server, func() []captured) {
	t.Helper()
	var mu sync.Mutex
	var got []captured
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, captured{path: r.URL.Path, header: r.Header.Clone(), body: b})
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv, func() []captured {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// checkGolden compares got with testdata/signals/name (or rewrites it with -update).
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "signals", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, got, 0o644))
	}
	want, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "golden %s (rerun with -update and read the diff)", p)
}

// indented is body re-indented; the bytes and key order are the sender's.
func indented(t *testing.T, body []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Indent(&b, body, "", "  "))
	b.WriteByte('\n')
	return b.Bytes()
}

// headerText lists the request headers a receiver relies on, one
// "Name: value" line each, sorted; transport headers are left out.
func headerText(h http.Header) []byte {
	var lines []string
	for k, vs := range h {
		switch k {
		case "Accept-Encoding", "Content-Length":
			continue
		}
		for _, v := range vs {
			lines = append(lines, k+": "+v)
		}
	}
	slices.Sort(lines)
	return []byte(strings.Join(lines, "\n") + "\n")
}

// deliverOne queues nothing: it builds the single payload of ev and delivers it.
func deliverOne(t *testing.T, s Sink, ev Event) {
	t.Helper()
	ps, err := s.Payloads(ev)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.NoError(t, s.Deliver(context.Background(), &Message{ID: 7, EventID: ev.ID, Created: ev.Time, Payload: ps[0]}))
}

func goldenWebhook(t *testing.T, format, url string) *WebhookSink {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(goldenSecret+"\n"), 0o600))
	s, err := NewWebhookSink(WebhookConfig{Name: "ops", URL: url, Format: format, SecretFile: secret}, "https://fleetgate.example")
	require.NoError(t, err)
	return s
}

func TestGoldenWebhookAlertmanagerFormat(t *testing.T) {
	srv, got := captureServer(t)
	deliverOne(t, goldenWebhook(t, FormatAlertmanager, srv.URL+"/hook"), goldenFailover())
	req := got()
	require.Len(t, req, 1)
	require.Equal(t, "/hook", req[0].path)
	checkGolden(t, "webhook-alertmanager.json", indented(t, req[0].body))
	checkGolden(t, "webhook-alertmanager.headers", headerText(req[0].header))
}

// TestGoldenFingerprint: the webhook's fingerprint is Alertmanager's, FNV-1a
// 64 over the sorted label names and values, each followed by 0xff. The
// literal in webhook-alertmanager.json was computed outside Go:
//
//	python3 -c "h=14695981039346656037
//	for k,v in sorted({'alertname':'FleetgateFailover','group':'web','mode':'active-passive','severity':'critical'}.items()):
//	  for s in (k.encode()+b'\xff', v.encode()+b'\xff'):
//	    for c in s: h=((h^c)*1099511628211)%(1<<64)
//	print('%016x'%h)"
func TestGoldenFingerprint(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "signals", "webhook-alertmanager.json"))
	require.NoError(t, err)
	require.Contains(t, string(golden), `"fingerprint": "fd1a5c5dfd59a66f"`)
}

func TestGoldenWebhookCloudEvents(t *testing.T) {
	srv, got := captureServer(t)
	deliverOne(t, goldenWebhook(t, FormatCloudEvents, srv.URL+"/hook"), goldenFailover())
	req := got()
	require.Len(t, req, 1)
	checkGolden(t, "cloudevents.json", indented(t, req[0].body))
	checkGolden(t, "cloudevents.headers", headerText(req[0].header))
}

// TestGoldenAlertmanagerAlerts: what is POSTed to Alertmanager's
// /api/v2/alerts. A firing alert ends 4 × the resend interval after it is
// sent: that one field depends on the clock, so it is checked against the
// clock and replaced by a marker before the comparison.
func TestGoldenAlertmanagerAlerts(t *testing.T) {
	const resend = time.Minute
	srv, got := captureServer(t)
	s, err := NewAlertmanagerSink(AlertmanagerConfig{URL: srv.URL + "/"}, resend, "https://fleetgate.example")
	require.NoError(t, err)

	before := time.Now()
	deliverOne(t, s, goldenFailover())
	after := time.Now()
	deliverOne(t, s, goldenRestore())
	req := got()
	require.Len(t, req, 2)
	for _, r := range req {
		require.Equal(t, "/api/v2/alerts", r.path)
	}

	var firing []struct {
		EndsAt string `json:"endsAt"`
	}
	require.NoError(t, json.Unmarshal(req[0].body, &firing))
	require.Len(t, firing, 1)
	ends, err := time.Parse(time.RFC3339Nano, firing[0].EndsAt)
	require.NoError(t, err)
	require.False(t, ends.Before(before.Add(4*resend)), "endsAt %s", ends)
	require.False(t, ends.After(after.Add(4*resend)), "endsAt %s", ends)
	body := bytes.Replace(req[0].body, []byte(`"endsAt":"`+firing[0].EndsAt+`"`), []byte(`"endsAt":"SENT+4*RESEND"`), 1)
	checkGolden(t, "alertmanager-firing.json", indented(t, body))

	// A resolved alert is fully determined by the event: its exact bytes.
	checkGolden(t, "alertmanager-resolved.json", indented(t, req[1].body))
	checkGolden(t, "alertmanager.headers", headerText(req[1].header))
}

// TestSignatureKnownAnswers: the signature header is HMAC-SHA256 in hex,
// checked against values computed outside Go. The first is RFC 4231's test
// case 2; the second was computed over the golden webhook body with
//
//	printf %s "$(jq -c . testdata/signals/webhook-alertmanager.json)" |
//	  openssl dgst -sha256 -hmac fleetgate-golden-secret
//
// (jq -c gives back the exact bytes sent: the golden is that body indented).
func TestSignatureKnownAnswers(t *testing.T) {
	require.Equal(t, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
		Sign([]byte("Jefe"), []byte("what do ya want for nothing?")))

	golden, err := os.ReadFile(filepath.Join("testdata", "signals", "webhook-alertmanager.json"))
	require.NoError(t, err)
	var compact bytes.Buffer
	require.NoError(t, json.Compact(&compact, golden))
	const want = "sha256=ef9fb74ad0865728d3a7ba7b5df872edbacd4cd9ccd4aff283ff15236246e144"
	require.Equal(t, want, Sign([]byte(goldenSecret), compact.Bytes()))

	// And the header the sink sends is that value.
	srv, got := captureServer(t)
	deliverOne(t, goldenWebhook(t, FormatAlertmanager, srv.URL), goldenFailover())
	req := got()
	require.Len(t, req, 1)
	require.Equal(t, compact.Bytes(), req[0].body)
	require.Equal(t, want, req[0].header.Get(SignatureHeader))
}
