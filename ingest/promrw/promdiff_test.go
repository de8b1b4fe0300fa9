//go:build promdiff

package promrw

// The differential runner: `make rw-diff` (go test -tags promdiff -run
// TestPromDiff). It sends every case of partialCorpus to a fresh Prometheus
// 3.16 (built outside the repository by `make prom3`) and to a fresh
// bin/fleetgate in dev mode, records status, Written headers and what is
// queryable afterwards, writes Prometheus's answers to goldenPartial
// (-rwdiff.update) and prints both side by side.

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
)

var (
	promBin  = flag.String("rwdiff.prometheus", "", "Prometheus 3.16 binary (default $HOME/.cache/fleetgate/prom3/prometheus)")
	fgBin    = flag.String("rwdiff.fleetgate", "../../bin/fleetgate", "fleetgate binary")
	update   = flag.Bool("rwdiff.update", false, "write Prometheus's answers to "+goldenPartial)
	onlyCase = flag.String("rwdiff.case", "", "run only the cases whose id contains this")
)

// promConfig configures Prometheus's TSDB as fleetgate's defaults configure
// the embedded one: 100000 exemplars, no out-of-order window, 15d retention.
const promConfig = `# Written by ingest/promrw/promdiff_test.go; no scrape configs.
storage:
  exemplars:
    max_exemplars: 100000
  tsdb:
    out_of_order_time_window: 0s
`

func promArgs(dir, addr string) []string {
	return []string{
		"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=15d",
		"--web.listen-address=" + addr,
		"--web.enable-remote-write-receiver",
		"--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest",
		"--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request",
		"--enable-feature=exemplar-storage",
		"--log.level=error",
	}
}

func fleetgateArgs(dir, addr string) []string {
	return []string{
		"--storage.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--otlp.grpc-listen-address=",
		"--otlp.http-listen-address=",
		"--log.level=error",
	}
}

// target is a receiver process under test.
type target struct {
	name string
	bin  string
	args func(dir, addr string) []string
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// start runs a fresh instance of tg and returns its base URL.
func (tg target) start(t *testing.T) string {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promConfig), 0o644))
	addr := freeAddr(t)
	cmd := exec.Command(tg.bin, tg.args(dir, addr)...)
	cmd.Dir = dir
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start(), "starting %s", tg.bin)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		var werr error
		select {
		case werr = <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			werr = <-exited
		}
		if werr != nil {
			t.Logf("%s exited: %v", tg.name, werr)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", tg.name, logs.String())
		}
	})
	u := "http://" + addr
	require.Eventually(t, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true // reported below
		default:
		}
		resp, err := http.Get(u + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 50*time.Millisecond, "%s did not become ready", tg.name)
	select {
	case err := <-exited:
		t.Fatalf("%s exited: %v\n%s", tg.name, err, logs.String())
	default:
	}
	return u
}

// runCase sends c to a fresh instance of tg.
func (tg target) runCase(t *testing.T, c rwCase, proto string) rwResult {
	u := tg.start(t)
	base := time.Now().Truncate(time.Second).UnixMilli()
	res := rwResult{Case: c.name, Proto: proto, Doc: c.doc}
	send := func(r rwRequest) rwAnswer {
		body, ct, ce, err := r.encode(proto, base)
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodPost, u+"/api/v1/write", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Content-Encoding", ce)
		req.Header.Set(fleet.DevHeader, devCluster)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return answerFrom(resp.StatusCode, resp.Header, b)
	}
	for _, s := range c.setup {
		res.Setup = append(res.Setup, send(s))
	}
	res.Answer = send(c.req)
	res.Stored, res.Exemplars = storedVia(t, u, base)
	return res
}

func apiGet(t *testing.T, u string, q url.Values, data any) {
	resp, err := http.Get(u + "?" + q.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, b)
	env := struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}{}
	require.NoError(t, json.Unmarshal(b, &env))
	require.Equal(t, "success", env.Status, string(b))
	require.NoError(t, json.Unmarshal(env.Data, data), string(b))
}

func msFrom(t *testing.T, sec float64, base int64) int64 {
	return int64(math.Round(sec*1000)) - base
}

func parseValue(t *testing.T, s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return v
}

// storedVia reads what is queryable through the Prometheus HTTP API, in the
// form storedIn gives for the in-process TSDB.
func storedVia(t *testing.T, u string, base int64) (map[string][]string, map[string][]string) {
	var matrix struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric     map[string]string    `json:"metric"`
			Values     [][2]any             `json:"values"`
			Histograms [][2]json.RawMessage `json:"histograms"`
		} `json:"result"`
	}
	at := float64(base)/1000 + 1200
	apiGet(t, u+"/api/v1/query", url.Values{"query": {`{__name__=~".+"}[1d]`}, "time": {strconv.FormatFloat(at, 'f', 3, 64)}}, &matrix)
	require.Equal(t, "matrix", matrix.ResultType)
	stored := map[string][]string{}
	for _, s := range matrix.Result {
		type point struct {
			t int64
			s string
		}
		var pts []point
		for _, v := range s.Values {
			ts := msFrom(t, v[0].(float64), base)
			pts = append(pts, point{ts, storedFloat(ts, parseValue(t, v[1].(string)))})
		}
		for _, h := range s.Histograms {
			var sec float64
			require.NoError(t, json.Unmarshal(h[0], &sec))
			var hv struct {
				Count string `json:"count"`
				Sum   string `json:"sum"`
			}
			require.NoError(t, json.Unmarshal(h[1], &hv))
			ts := msFrom(t, sec, base)
			pts = append(pts, point{ts, storedHist(ts, parseValue(t, hv.Count), parseValue(t, hv.Sum))})
		}
		sort.SliceStable(pts, func(i, j int) bool { return pts[i].t < pts[j].t })
		var out []string
		for _, p := range pts {
			out = append(out, p.s)
		}
		if len(out) > 0 {
			stored[seriesKey(labels.FromMap(s.Metric))] = out
		}
	}

	var ex []struct {
		SeriesLabels map[string]string `json:"seriesLabels"`
		Exemplars    []struct {
			Labels    map[string]string `json:"labels"`
			Value     string            `json:"value"`
			Timestamp float64           `json:"timestamp"`
		} `json:"exemplars"`
	}
	apiGet(t, u+"/api/v1/query_exemplars", url.Values{
		"query": {`{__name__=~".+"}`},
		"start": {strconv.FormatInt(base/1000-86400, 10)},
		"end":   {strconv.FormatInt(base/1000+86400, 10)},
	}, &ex)
	var exemplars map[string][]string
	for _, s := range ex {
		if len(s.Exemplars) == 0 {
			continue
		}
		if exemplars == nil {
			exemplars = map[string][]string{}
		}
		k := seriesKey(labels.FromMap(s.SeriesLabels))
		for _, e := range s.Exemplars {
			exemplars[k] = append(exemplars[k], storedExemplar(msFrom(t, e.Timestamp, base), parseValue(t, e.Value), labels.FromMap(e.Labels)))
		}
	}
	return stored, exemplars
}

func TestPromDiff(t *testing.T) {
	bin := *promBin
	if bin == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		bin = filepath.Join(home, ".cache", "fleetgate", "prom3", "prometheus")
	}
	_, err := os.Stat(bin)
	require.NoError(t, err, "Prometheus 3.16 binary missing: run `make prom3`")
	_, err = os.Stat(*fgBin)
	require.NoError(t, err, "fleetgate binary missing: run `make build`")
	prom := target{name: "prometheus", bin: bin, args: promArgs}
	fg := target{name: "fleetgate", bin: *fgBin, args: fleetgateArgs}

	var g rwGolden
	g.Command = "make rw-diff"
	g.Args = promArgs("<dir>", "127.0.0.1:<port>")
	g.Config = promConfig
	t.Run("buildinfo", func(t *testing.T) {
		u := prom.start(t)
		apiGet(t, u+"/api/v1/status/buildinfo", nil, &g.Prometheus)
		require.True(t, strings.HasPrefix(g.Prometheus.Version, "3.16."), "want Prometheus 3.16, got %q: delete %s and run `make prom3`", g.Prometheus.Version, bin)
		bi, err := buildinfo.ReadFile(bin)
		require.NoError(t, err)
		for _, d := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
			if d.Path == "github.com/prometheus/prometheus" {
				g.Prometheus.Module = d.Path + "@" + d.Version
			}
		}
		require.Equal(t, "github.com/prometheus/prometheus@v0.316.0", g.Prometheus.Module)
	})
	if t.Failed() {
		return
	}
	var old map[string]rwResult
	if !*update {
		old = map[string]rwResult{}
		for _, r := range loadGolden(t).Results {
			old[r.id()] = r
		}
	}

	var table strings.Builder
	table.WriteString("| case | Prometheus 3.16 | fleetgate | |\n|---|---|---|---|\n")
	for _, c := range partialCorpus {
		for _, proto := range c.protocols() {
			id := caseID(proto, c.name)
			if *onlyCase != "" && !strings.Contains(id, *onlyCase) {
				continue
			}
			var pr, fr rwResult
			ok := t.Run(id, func(t *testing.T) {
				pr = prom.runCase(t, c, proto)
				for i, a := range pr.Setup {
					require.Less(t, a.Status, 300, "Prometheus refused setup request %d: %s", i, a.Body)
				}
				if old != nil {
					o, found := old[id]
					require.True(t, found, "%s not in %s", id, goldenPartial)
					require.True(t, sameAnswer(o.Answer, pr.Answer), "Prometheus answers %s, recorded %s", pr.Answer, o.Answer)
					require.Equal(t, o.Stored, pr.Stored)
					require.Equal(t, o.Exemplars, pr.Exemplars)
				}
				fr = fg.runCase(t, c, proto)
			})
			g.Results = append(g.Results, pr)
			if !ok {
				continue
			}
			verdict := "same"
			if problems := compareResults(pr, fr); len(problems) > 0 {
				verdict = "**DIFFERS**"
				t.Errorf("%s: %s", id, strings.Join(problems, "; "))
			} else if d, listed := intentionalDifferences[id]; listed {
				verdict = "intentional: " + d.reason
			}
			storedNote := func(r rwResult) string {
				n := 0
				for _, pts := range r.Stored {
					n += len(pts)
				}
				ne := 0
				for _, e := range r.Exemplars {
					ne += len(e)
				}
				return fmt.Sprintf("%s, stored %d/%d", r.Answer, n, ne)
			}
			fmt.Fprintf(&table, "| %s | %s | %s | %s |\n", id, storedNote(pr), storedNote(fr), verdict)
		}
	}
	fmt.Println(table.String())
	if *update {
		require.Empty(t, *onlyCase, "-rwdiff.update records every case")
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		require.NoError(t, enc.Encode(g))
		require.NoError(t, os.WriteFile(goldenPartial, b.Bytes(), 0o644))
		t.Logf("wrote %s", goldenPartial)
	}
}
