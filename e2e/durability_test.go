//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// mountTmpfs mounts a small tmpfs (root only: the test fails, never skips,
// without it) and unmounts it when the test ends.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	require.Equal(t, 0, os.Geteuid(), "the disk-full test mounts a tmpfs: run it as root")
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	require.NoErrorf(t, err, "mount -t tmpfs: %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes f until the filesystem is full (ENOSPC).
func fillDisk(t *testing.T, f *os.File) {
	t.Helper()
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				require.Truef(t, errors.Is(err, syscall.ENOSPC), "filling the disk: %v", err)
				break
			}
		}
	}
}

func httpDo(t *testing.T, method, u, token, contentType string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// durabilityLoad writes uniquely labelled samples, log lines and spans, one
// request of each per round, and remembers which rounds were acknowledged.
type durabilityLoad struct {
	t     *testing.T
	fg    *Fleetgate
	token string
	round int

	samplesOK, samplesRefused map[string]bool // by req label
	logsOK, logsRefused       map[string]bool // by round label
	spansOK, spansRefused     map[string]bool // by trace ID
	statuses                  map[string]map[int]int
}

const (
	seriesPerReq  = 20
	samplesPerSer = 5
	linesPerPush  = 10
	spansPerTrace = 5
)

func newDurabilityLoad(t *testing.T, fg *Fleetgate, token string) *durabilityLoad {
	return &durabilityLoad{t: t, fg: fg, token: token,
		samplesOK: map[string]bool{}, samplesRefused: map[string]bool{}, logsOK: map[string]bool{}, logsRefused: map[string]bool{},
		spansOK: map[string]bool{}, spansRefused: map[string]bool{}, statuses: map[string]map[int]int{}}
}

func (l *durabilityLoad) count(kind string, code int) {
	if l.statuses[kind] == nil {
		l.statuses[kind] = map[int]int{}
	}
	l.statuses[kind][code]++
}

// step sends one round; what is neither 2xx nor 503 fails the test.
func (l *durabilityLoad) step() {
	t := l.t
	l.round++
	id := strconv.Itoa(l.round)
	now := time.Now()
	okOr503 := func(kind string, code int, body string) bool {
		l.count(kind, code)
		require.Truef(t, code/100 == 2 || code == http.StatusServiceUnavailable, "%s round %s: %d %s", kind, id, code, body)
		return code/100 == 2
	}

	req := &prompb.WriteRequest{}
	for s := 0; s < seriesPerReq; s++ {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "durable_total"}, {Name: "req", Value: id}, {Name: "series", Value: strconv.Itoa(s)}}}
		for i := 0; i < samplesPerSer; i++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: now.Add(time.Duration(i-samplesPerSer) * time.Second).UnixMilli(), Value: float64(i)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	code, body := remoteWrite(t, l.fg.URL, l.token, req)
	if okOr503("remote_write", code, body) {
		l.samplesOK[id] = true
	} else {
		l.samplesRefused[id] = true
	}

	var values [][2]string
	for i := 0; i < linesPerPush; i++ {
		values = append(values, [2]string{strconv.FormatInt(now.Add(time.Duration(i)*time.Millisecond).UnixNano(), 10), fmt.Sprintf("round %s line %d %s", id, i, strings.Repeat("x", 200))})
	}
	lb, err := json.Marshal(map[string]any{"streams": []map[string]any{{"stream": map[string]string{"app": "durable", "round": id}, "values": values}}})
	require.NoError(t, err)
	code, body = httpDo(t, http.MethodPost, l.fg.URL+"/loki/api/v1/push", l.token, "application/json", lb)
	if okOr503("loki", code, body) {
		l.logsOK[id] = true
	} else {
		l.logsRefused[id] = true
	}

	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "durable")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	var tid [16]byte
	copy(tid[:], fmt.Sprintf("durable-%08d", l.round))
	for i := 0; i < spansPerTrace; i++ {
		sp := spans.AppendEmpty()
		sp.SetTraceID(tid)
		sp.SetSpanID([8]byte{byte(i + 1)})
		sp.SetName(fmt.Sprintf("op-%d", i))
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	}
	tb, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	require.NoError(t, err)
	code, body = httpDo(t, http.MethodPost, l.fg.URL+"/v1/traces", l.token, "application/x-protobuf", tb)
	hexID := fmt.Sprintf("%x", tid[:])
	if okOr503("otlp_traces", code, body) {
		l.spansOK[hexID] = true
	} else {
		l.spansRefused[hexID] = true
	}
}

// verify checks that every acknowledged sample, line and span is there
// exactly once and nothing refused is.
func (l *durabilityLoad) verify() {
	t := l.t
	res := query(t, l.fg.URL, `sum by (req) (count_over_time(durable_total[30m]))`, time.Now())
	present := map[string]int{}
	for _, s := range res {
		present[s.Metric["req"]] = int(parseVal(t, s.Value[1]))
	}
	for id := range l.samplesOK {
		require.Equalf(t, seriesPerReq*samplesPerSer, present[id], "samples of acknowledged request %s", id)
	}
	for id := range l.samplesRefused {
		require.Zerof(t, present[id], "samples of refused (503) request %s", id)
	}

	q := url.Values{"query": {`{app="durable"}`}, "limit": {"5000"},
		"start": {strconv.FormatInt(time.Now().Add(-time.Hour).UnixNano(), 10)}, "end": {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)}}
	var ls lokiStreams
	require.Equal(t, 200, getJSON(t, l.fg.URL+"/loki/api/v1/query_range?"+q.Encode(), &ls))
	lines := map[string]int{}
	for _, s := range ls.Data.Result {
		lines[s.Stream["round"]] += len(s.Values)
	}
	for id := range l.logsOK {
		require.Equalf(t, linesPerPush, lines[id], "log lines of acknowledged push %s (exactly once)", id)
	}
	for id := range l.logsRefused {
		require.Zerof(t, lines[id], "log lines of refused (503) push %s", id)
	}

	spanCount := func(hexID string) int {
		req, err := http.NewRequest(http.MethodGet, l.fg.URL+"/api/traces/"+hexID, nil)
		require.NoError(t, err)
		req.Header.Set("Accept", "application/protobuf")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusNotFound {
			return 0
		}
		require.Equalf(t, 200, resp.StatusCode, "trace %s: %s", hexID, b)
		var um ptrace.ProtoUnmarshaler
		td, err := um.UnmarshalTraces(b)
		require.NoError(t, err)
		return td.SpanCount()
	}
	for id := range l.spansOK {
		require.Equalf(t, spansPerTrace, spanCount(id), "spans of acknowledged trace %s (exactly once)", id)
	}
	for id := range l.spansRefused {
		require.Zerof(t, spanCount(id), "spans of refused (503) trace %s", id)
	}
}

func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			require.NoError(t, err)
			return v
		}
	}
	return 0
}

// TestDiskFullDurability: fleetgate on a 64 MiB tmpfs takes samples, log
// lines, spans and failover decisions while a filler file fills the disk,
// keeps going (503) while it is full, recovers once the space is freed,
// and after SIGKILL and a restart every acknowledged sample, line, span,
// event and signal is there (the signal delivered once the receiver is
// up) and nothing that got a 5xx took effect.
func TestDiskFullDurability(t *testing.T) {
	disk := mountTmpfs(t, "64m")
	hook := &hookReceiver{t: t, secret: "s"}
	hook.setFail(true) // down until after the crash
	hsrv := httptest.NewServer(hook)
	defer hsrv.Close()
	token := "tok-eu-1-durable"
	fg := startFleetgate(t, fmt.Sprintf(`
clusters:
- {name: eu-1, credentials: {bearer_token_file: %s}}
failover:
  groups:
  - {name: web, mode: active-active, clusters: [eu-1]}
signals:
  retry: {min_backoff: 100ms, max_backoff: 500ms}
  webhooks:
  - {name: ce, url: %s/ce, format: cloudevents, secret_file: %s}
logs_traces:
  derived_metrics_interval: 1s
`, writeSecret(t, "eu-1.token", token), hsrv.URL, writeSecret(t, "hook", hook.secret)), "--storage.path", disk)
	load := newDurabilityLoad(t, fg, token)
	freeze := func(method string) (int, string) {
		if method == http.MethodDelete {
			return httpDo(t, method, fg.URL+"/api/v1/failover/groups/web/freeze", e2eAdminToken, "", nil)
		}
		return httpDo(t, method, fg.URL+"/api/v1/failover/groups/web/freeze", e2eAdminToken, "application/json", []byte(`{"reason":"disk test"}`))
	}
	frozen := func() bool {
		code, r := apiGet(t, fg.URL, "/api/v1/failover/groups", nil)
		require.Equal(t, 200, code)
		var gs []struct {
			Frozen *json.RawMessage `json:"frozen"`
		}
		require.NoError(t, json.Unmarshal(r.Data, &gs))
		return gs[0].Frozen != nil
	}

	// 1. Disk with room.
	for i := 0; i < 10; i++ {
		load.step()
	}
	code, body := freeze(http.MethodPost)
	require.Equal(t, 200, code, body)

	// 2. The disk fills up.
	filler, err := os.Create(filepath.Join(disk, "filler"))
	require.NoError(t, err)
	t.Cleanup(func() { filler.Close() }) // before the unmount
	fillDisk(t, filler)
	for i := 0; i < 15; i++ {
		fillDisk(t, filler) // what fleetgate cut off again is taken at once
		load.step()
	}
	code, body = freeze(http.MethodDelete)
	require.Truef(t, code == 200 || code == 503, "unfreeze on a full disk: %d %s", code, body)
	unfrozeWhileFull := code == 200
	if !unfrozeWhileFull {
		require.True(t, frozen(), "a 503 unfreeze changed nothing")
	}
	rc, rb := httpDo(t, http.MethodGet, fg.URL+"/-/ready", "", "", nil)
	t.Logf("MEASURED: /-/ready on the full disk: %d %s", rc, strings.TrimSpace(rb))
	require.Equal(t, 503, rc)
	require.Contains(t, rb, "WAL failed")
	require.Equal(t, 1.0, metricValue(t, fg.URL, "fleetgate_storage_wal_failed"))
	for i := 0; i < 5; i++ {
		fillDisk(t, filler)
		load.step()
	}

	// 3. Space is freed: the WAL is reopened in process, writes resume.
	require.NoError(t, filler.Close())
	require.NoError(t, os.Remove(filler.Name()))
	eventually(t, 30*time.Second, "ready again after the space is freed", func() error {
		if c, b := httpDo(t, http.MethodGet, fg.URL+"/-/ready", "", "", nil); c != 200 {
			return fmt.Errorf("%d %s", c, b)
		}
		return nil
	})
	require.Equal(t, 0.0, metricValue(t, fg.URL, "fleetgate_storage_wal_failed"))
	require.GreaterOrEqual(t, metricValue(t, fg.URL, "fleetgate_storage_wal_reopens_total"), 1.0)
	before := len(load.samplesOK)
	for i := 0; i < 10; i++ {
		load.step()
	}
	require.Equal(t, before+10, len(load.samplesOK), "every write after the reopen is acknowledged")
	if unfrozeWhileFull {
		code, body = freeze(http.MethodPost)
	} else {
		code, body = freeze(http.MethodDelete)
	}
	require.Equal(t, 200, code, body)
	wantFrozen := unfrozeWhileFull
	require.Equal(t, wantFrozen, frozen())
	events := fgEvents(t, fg.URL)
	t.Logf("MEASURED: statuses before the crash: %v; %d events", load.statuses, len(events))

	// 4. Crash, restart; the receiver comes back.
	fg.Stop(syscall.SIGKILL)
	fg.Start()
	waitReady(t, fg.Proc, fg.URL+"/-/ready", 60*time.Second)
	hook.setFail(false)

	load.verify()
	after := fgEvents(t, fg.URL)
	require.Equal(t, len(events), len(after), "every logged event survived")
	require.Equal(t, wantFrozen, frozen(), "the state of the last decision survived")
	kinds := map[string]int{}
	for _, ev := range after {
		kinds[ev.Kind]++
	}
	wantFreezes, wantUnfreezes := 1, 1
	if unfrozeWhileFull {
		wantFreezes = 2
	}
	require.Equal(t, wantFreezes, kinds["freeze"])
	require.Equal(t, wantUnfreezes, kinds["unfreeze"], "the unfreeze refused with 503 did not take effect")
	eventually(t, 30*time.Second, "every event's signal delivered", func() error {
		got := map[string]bool{}
		for _, d := range hook.deliveries() {
			got[d.event] = true
		}
		for _, ev := range after {
			if !got[fmt.Sprint(ev.ID)] {
				return fmt.Errorf("event %d (%s) not delivered; have %v", ev.ID, ev.Kind, got)
			}
		}
		if len(got) != len(after) {
			return fmt.Errorf("signals of events that are not logged were delivered: %v", got)
		}
		return nil
	})
	t.Logf("MEASURED: %d samples, %d log lines, %d spans acknowledged, %d/%d/%d refused with 503; all acknowledged present after SIGKILL, no refused one",
		len(load.samplesOK)*seriesPerReq*samplesPerSer, len(load.logsOK)*linesPerPush, len(load.spansOK)*spansPerTrace,
		len(load.samplesRefused), len(load.logsRefused), len(load.spansRefused))
	require.NotEmpty(t, load.samplesRefused, "the disk was full: some writes were refused")
}

// TestMinFreeBytesReserve measures what storage.min_free_bytes buys: the
// disk is filled (by a filler, then by fleetgate's own log store) down to
// ENOSPC. Without the reserve the TSDB WAL write fails and the store is
// reopened (a WAL replay) once space is back; with it, samples are refused
// (503, low_disk) before the WAL can fail, and resume without a reopen.
func TestMinFreeBytesReserve(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reserve int
	}{{"no reserve", 0}, {"8MiB reserve", 8 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			disk := mountTmpfs(t, "48m")
			token := "tok-eu-1-reserve"
			fg := startFleetgate(t, fmt.Sprintf(`
clusters:
- {name: eu-1, credentials: {bearer_token_file: %s}}
storage: {min_free_bytes: %d}
`, writeSecret(t, "eu-1.token", token), tc.reserve), "--storage.path", disk)
			load := newDurabilityLoad(t, fg, token)
			for i := 0; i < 5; i++ {
				load.step()
			}
			var st syscall.Statfs_t
			require.NoError(t, syscall.Statfs(disk, &st))
			free := int64(st.Bavail) * st.Bsize
			filler, err := os.Create(filepath.Join(disk, "filler"))
			require.NoError(t, err)
			t.Cleanup(func() { filler.Close() })
			require.NoError(t, filler.Truncate(0))
			buf := make([]byte, 1<<20)
			for left := free - 4<<20; left > 0; left -= int64(len(buf)) {
				_, err := filler.Write(buf[:min(int64(len(buf)), left)])
				require.NoError(t, err)
			}
			// fleetgate's own log store fills the last 4 MiB.
			for i := 0; i < 5000 && len(load.logsRefused) == 0; i++ {
				load.step()
			}
			require.NotEmpty(t, load.logsRefused, "the disk filled up")
			failures := metricValue(t, fg.URL, "fleetgate_storage_wal_failures_total")
			refused := load.statuses["remote_write"][503]
			require.NoError(t, filler.Close())
			require.NoError(t, os.Remove(filler.Name()))
			eventually(t, 30*time.Second, "ready again", func() error {
				if c, b := httpDo(t, http.MethodGet, fg.URL+"/-/ready", "", "", nil); c != 200 {
					return fmt.Errorf("%d %s", c, b)
				}
				return nil
			})
			reopens := metricValue(t, fg.URL, "fleetgate_storage_wal_reopens_total")
			t.Logf("MEASURED (%s): remote-write %v, WAL failures %v, reopens %v", tc.name, load.statuses["remote_write"], failures, reopens)
			if tc.reserve > 0 {
				require.Zero(t, failures, "the reserve refuses samples before the WAL can fail")
				require.Zero(t, reopens)
				require.Positive(t, refused)
			} else {
				require.Positive(t, failures)
				require.Positive(t, reopens)
			}
			load.step()
			require.True(t, load.samplesOK[strconv.Itoa(load.round)], "writes resume")
		})
	}
}
