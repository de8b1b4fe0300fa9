//go:build e2e

// Package e2e runs fleetgate against real outside programs: Debian's
// prometheus, prometheus-alertmanager and victoria-metrics. A missing peer
// fails the test; it never skips.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var fleetgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetgate-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fleetgateBin = filepath.Join(dir, "fleetgate")
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(self))
	cmd := exec.Command("go", "build", "-o", fleetgateBin, "./cmd/fleetgate")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building fleetgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireBinary fails (never skips) when a peer program is missing.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoErrorf(t, err, "%s is not installed: run `make e2e-deps` (apt-get install prometheus prometheus-alertmanager victoria-metrics)", name)
	return p
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is a real process started by a test.
type Proc struct {
	t       *testing.T
	Name    string
	bin     string
	args    []string
	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startProc starts bin with args, logging to a file that is printed when the test fails.
func startProc(t *testing.T, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, Name: name, bin: bin, args: args, logPath: filepath.Join(t.TempDir(), name+".log")}
	p.Start()
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM)
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("---- log of %s ----\n%s", name, b)
		}
	})
	return p
}

// Start (re)starts the process.
func (p *Proc) Start() {
	p.t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(p.t, err)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(p.t, cmd.Start(), "starting %s", p.Name)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
}

// Stop signals the process and waits for it to exit (SIGKILL after 20 s).
func (p *Proc) Stop(sig syscall.Signal) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Log returns what the process has logged so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// waitReady waits until url answers 200, failing fast when the process exits.
func waitReady(t *testing.T, p *Proc, u string, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	readyOrExited := func() bool {
		if p.Exited() {
			return true // reported below, without waiting out the timeout
		}
		resp, err := client.Get(u)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	require.Eventually(t, readyOrExited, timeout, 100*time.Millisecond, "%s not ready at %s after %s", p.Name, u, timeout)
	if p.Exited() {
		t.Fatalf("%s exited before it was ready:\n%s", p.Name, tail(p.Log(), 4000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Fleetgate is a running fleetgate process.
type Fleetgate struct {
	*Proc
	URL      string
	Dir      string
	Config   string
	OTLPGRPC string
	OTLPHTTP string
	// AdminTokenFile holds e2eAdminToken when the harness added the auth: section.
	AdminTokenFile string
}

// e2eAdminToken is the admin token of fleetgates whose config has no auth: section.
const e2eAdminToken = "e2e-admin-token"

// admin is the Authorization header of the harness's admin.
func admin() http.Header {
	return http.Header{"Authorization": {"Bearer " + e2eAdminToken}}
}

// startFleetgate writes cfg (may be empty) and starts fleetgate on free ports.
func startFleetgate(t *testing.T, cfg string, extra ...string) *Fleetgate {
	t.Helper()
	dir := t.TempDir()
	fg := &Fleetgate{Dir: dir}
	port := freePort(t)
	fg.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--storage.path", filepath.Join(dir, "data"),
		"--log.level", "debug",
	}
	// OTLP listens on free ports too, so parallel fleetgates never collide on :4317/:4318.
	fg.OTLPGRPC = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	fg.OTLPHTTP = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args = append(args, "--otlp.grpc-listen-address", fg.OTLPGRPC, "--otlp.http-listen-address", fg.OTLPHTTP)
	if cfg != "" {
		if !strings.HasPrefix(cfg, "auth:") && !strings.Contains(cfg, "\nauth:") {
			// Tests that do not test access control read anonymously and
			// change state as the admin "e2e".
			fg.AdminTokenFile = filepath.Join(dir, "admin.token")
			require.NoError(t, os.WriteFile(fg.AdminTokenFile, []byte(e2eAdminToken+"\n"), 0o600))
			cfg += "\nauth:\n  anonymous_read: true\n  admins: [{name: e2e, bearer_token_file: " + fg.AdminTokenFile + "}]\n"
		}
		fg.Config = filepath.Join(dir, "fleetgate.yml")
		require.NoError(t, os.WriteFile(fg.Config, []byte(cfg), 0o644))
		args = append(args, "--config.file", fg.Config)
	}
	args = append(args, extra...)
	fg.Proc = startProc(t, "fleetgate", fleetgateBin, args...)
	waitReady(t, fg.Proc, fg.URL+"/-/ready", 60*time.Second)
	return fg
}

// Restart stops fleetgate with sig and starts it again on the same port and data.
func (fg *Fleetgate) Restart(t *testing.T, sig syscall.Signal) {
	t.Helper()
	fg.Stop(sig)
	fg.Start()
	waitReady(t, fg.Proc, fg.URL+"/-/ready", 60*time.Second)
}

// writeSecret writes a token file and returns its path.
func writeSecret(t *testing.T, name, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(token+"\n"), 0o600))
	return p
}

// startPrometheus runs Debian's prometheus with the given config.
func startPrometheus(t *testing.T, name, cfg string, extra ...string) (*Proc, string) {
	t.Helper()
	bin := requireBinary(t, "prometheus")
	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(strings.ReplaceAll(cfg, "$SELF", fmt.Sprintf("127.0.0.1:%d", port))), 0o644))
	args := append([]string{
		"--config.file", cfgPath,
		"--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port),
	}, extra...)
	p := startProc(t, name, bin, args...)
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, p, u+"/-/ready", 60*time.Second)
	return p, u
}

// apiResponse is the Prometheus API envelope.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// apiGet calls a Prometheus-style API and decodes the envelope.
func apiGet(t *testing.T, base, path string, params url.Values) (int, apiResponse) {
	t.Helper()
	u := base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var r apiResponse
	require.NoErrorf(t, json.Unmarshal(b, &r), "decoding %s: %s", u, b)
	return resp.StatusCode, r
}

// promSeries is one vector or matrix element.
type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value,omitempty"`
	Values [][]any           `json:"values,omitempty"`
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// query runs an instant query and returns its series.
func query(t *testing.T, base, q string, ts time.Time) []promSeries {
	t.Helper()
	code, r := apiGet(t, base, "/api/v1/query", url.Values{"query": {q}, "time": {fmt.Sprintf("%.3f", float64(ts.UnixMilli())/1000)}})
	require.Equalf(t, 200, code, "query %q: %s", q, r.Error)
	var d queryData
	require.NoError(t, json.Unmarshal(r.Data, &d))
	var out []promSeries
	if d.ResultType == "vector" || d.ResultType == "matrix" {
		require.NoError(t, json.Unmarshal(d.Result, &out))
	}
	return out
}

// postJSON posts v as JSON and returns the status and body.
func postJSON(t *testing.T, u string, v any, header http.Header) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// eventually retries f until it returns nil or the timeout passes. f runs
// on the test's goroutine, unlike require.EventuallyWithT's condition,
// because the helpers it calls (query, apiGet, ...) fail the test through t,
// which only the test's goroutine may do; the sleep is the poll interval.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}
