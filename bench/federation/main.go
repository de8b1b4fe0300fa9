// Command federation measures the overhead of fleetgate's federated query
// path: the same PromQL through fleetgate (the cluster as a remote-read
// source, and as a Prometheus-API source) and straight to the source
// Prometheus. It starts a real Prometheus and two fleetgates, lets data
// accumulate, and prints a Markdown table of latencies.
//
//	make build && go run ./bench/federation -fleetgate bin/fleetgate
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "federation bench:", err)
		os.Exit(1)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// proc is a child process; stop ends it.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(dir, name, bin string, args ...string) (*proc, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("starting %s: %w", name, err), log.Close())
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // stop ends it with a signal: its exit status says nothing
		if err := log.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "closing %s.log: %v\n", name, err)
		}
		close(p.done)
	}()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func waitReady(u string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready", u)
}

func run() error {
	promBin := flag.String("prometheus", "/usr/bin/prometheus", "Prometheus binary")
	fgBin := flag.String("fleetgate", "bin/fleetgate", "fleetgate binary (make build)")
	n := flag.Int("n", 200, "queries per target and query")
	warmup := flag.Duration("warmup", 30*time.Second, "time to let data accumulate first")
	flag.Parse()

	dir, err := os.MkdirTemp("", "fleetgate-bench-federation")
	if err != nil {
		return err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "removing the work directory:", err)
		}
	}()

	pp, err := freePort()
	if err != nil {
		return err
	}
	promURL := fmt.Sprintf("http://127.0.0.1:%d", pp)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: self
    static_configs: [{targets: ['127.0.0.1:%d']}]
`, pp)), 0o644); err != nil {
		return err
	}
	prom, err := start(dir, "prometheus", *promBin, "--config.file", cfg, "--storage.tsdb.path", filepath.Join(dir, "prom"),
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", pp))
	if err != nil {
		return err
	}
	defer prom.stop()
	if err := waitReady(promURL + "/-/ready"); err != nil {
		return err
	}

	targets := []struct{ name, url string }{{"direct to Prometheus", promURL}}
	for _, src := range []struct{ name, yaml string }{
		{"fleetgate, remote-read source", fmt.Sprintf("{type: remote_read, url: %s/api/v1/read}", promURL)},
		{"fleetgate, Prometheus-API source", fmt.Sprintf("{type: prometheus, url: %s}", promURL)},
	} {
		port, err := freePort()
		if err != nil {
			return err
		}
		sub := filepath.Join(dir, fmt.Sprint(port))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		cfg := filepath.Join(sub, "fleetgate.yml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("clusters:\n  - name: eu-1\n    query: %s\n", src.yaml)), 0o644); err != nil {
			return err
		}
		fg, err := start(sub, "fleetgate", *fgBin, "--config.file", cfg, "--storage.path", filepath.Join(sub, "data"),
			"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--log.level", "warn")
		if err != nil {
			return err
		}
		defer fg.stop()
		u := fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := waitReady(u + "/-/ready"); err != nil {
			return err
		}
		targets = append(targets, struct{ name, url string }{src.name, u})
	}
	fmt.Fprintf(os.Stderr, "letting data accumulate for %s\n", *warmup)
	time.Sleep(*warmup)

	now := time.Now()
	end := now.Truncate(15 * time.Second)
	queries := []struct {
		name   string
		path   string
		params url.Values
	}{
		{"instant `up`", "/api/v1/query", url.Values{"query": {"up"}}},
		{"instant `sum by (job) (rate(prometheus_http_requests_total[1m]))`", "/api/v1/query",
			url.Values{"query": {"sum by (job) (rate(prometheus_http_requests_total[1m]))"}}},
		{"instant `count({__name__=~\".+\"})` (every series)", "/api/v1/query", url.Values{"query": {`count({__name__=~".+"})`}}},
		{"range 5m/15s `rate(prometheus_tsdb_head_samples_appended_total[1m])`", "/api/v1/query_range", url.Values{
			"query": {"rate(prometheus_tsdb_head_samples_appended_total[1m])"},
			"start": {fmt.Sprint(end.Add(-5 * time.Minute).Unix())}, "end": {fmt.Sprint(end.Unix())}, "step": {"15"}}},
	}
	client := &http.Client{Timeout: 30 * time.Second}
	fmt.Printf("| query | target | p50 | p90 | mean |\n|---|---|---|---|---|\n")
	for _, q := range queries {
		lat := make([][]time.Duration, len(targets))
		for i := 0; i < *n; i++ {
			for ti, tg := range targets { // interleaved, so drift hits every target alike
				p := url.Values{}
				for k, v := range q.params {
					p[k] = v
				}
				if q.path == "/api/v1/query" {
					p.Set("time", fmt.Sprint(now.Unix()))
				}
				d, err := timeGet(client, tg.url+q.path+"?"+p.Encode())
				if err != nil {
					return fmt.Errorf("%s %s: %w", tg.name, q.name, err)
				}
				lat[ti] = append(lat[ti], d)
			}
		}
		for ti, tg := range targets {
			p50, p90, mean := stats(lat[ti])
			fmt.Printf("| %s | %s | %s | %s | %s |\n", q.name, tg.name, p50, p90, mean)
		}
	}
	return nil
}

func timeGet(c *http.Client, u string) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"success"`) || strings.Contains(string(b), `"warnings"`) {
		return 0, errors.New(string(b))
	}
	return d, nil
}

func stats(ds []time.Duration) (p50, p90, mean time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return r(s[len(s)/2]), r(s[len(s)*9/10]), r(sum / time.Duration(len(s)))
}
