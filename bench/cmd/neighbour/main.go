// Command neighbour measures whether one cluster at its limits changes
// another cluster's service. It starts fleetgate (a fresh data directory per
// phase) with two clusters: cluster-0 ("us-1") with no limits and cluster-1
// ("eu-1") with limits.max_series and limits.ingestion_rate. us-1 writes a
// steady remote-write load (a round of every series each -us-interval);
// eu-1, in the noisy phases, sends as fast as it can, with many more series
// than its limit. Phases:
//
//	quiet            us-1 alone
//	noisy, limited   us-1 while eu-1 floods, eu-1 limited
//	noisy, unlimited us-1 while eu-1 floods, no limits (for comparison)
//
// It prints, per phase, us-1's acceptance and write latency (p50/p99) as the
// sender saw it, eu-1's answers by status, and fleetgate's CPU-seconds.
// The first rounds of us-1 (which create its series) are not measured.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/bench/load"
)

type phase struct {
	name           string
	noisy, limited bool
}

type result struct {
	phase       string
	us, eu      *load.RWResult
	cpu         time.Duration
	euSeries    string
	loadAvg     string
	euStatusStr string
}

func main() {
	var (
		fgBin       = flag.String("fleetgate-bin", "", "fleetgate binary (default: go build into the work dir)")
		workDir     = flag.String("work-dir", "", "data and logs (default: a new temp dir, removed at the end)")
		port        = flag.Int("port", 19311, "loopback port of fleetgate")
		duration    = flag.Duration("duration", 30*time.Second, "measured time per phase")
		version     = flag.Int("rw-version", 1, "remote-write protocol: 1 or 2")
		usSeries    = flag.Int("us-series", 20000, "us-1's series")
		usInterval  = flag.Duration("us-interval", time.Second, "us-1 sends every series once per interval")
		usBatch     = flag.Int("us-batch", 2000, "us-1's series per request")
		euSeries    = flag.Int("eu-series", 200000, "eu-1's series (it sends all of them, round after round)")
		euBatch     = flag.Int("eu-batch", 2000, "eu-1's series per request")
		euConc      = flag.Int("eu-concurrency", 4, "eu-1's concurrent requests")
		euMaxSeries = flag.Int("eu-max-series", 50000, "eu-1's limits.max_series")
		euRate      = flag.Float64("eu-rate", 20000, "eu-1's limits.ingestion_rate (samples/s; burst 2x)")
		phases      = flag.String("phases", "quiet,limited,unlimited", "phases to run, in order")
	)
	flag.Parse()
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "fleetgate-neighbour-")
		if err != nil {
			fatal(err)
		}
		dir = d
		cleanup = func() { os.RemoveAll(d) }
		defer cleanup()
	}
	if *fgBin == "" {
		*fgBin = filepath.Join(dir, "fleetgate-bin")
		out, err := exec.Command("go", "build", "-o", *fgBin, "./cmd/fleetgate").CombinedOutput()
		if err != nil {
			fatal(fmt.Errorf("building fleetgate: %w\n%s", err, out))
		}
	}
	all := map[string]phase{
		"quiet":     {name: "quiet (us-1 alone)"},
		"limited":   {name: "noisy eu-1, limited", noisy: true, limited: true},
		"unlimited": {name: "noisy eu-1, no limits", noisy: true},
	}
	var results []result
	for i, name := range strings.Split(*phases, ",") {
		ph, ok := all[strings.TrimSpace(name)]
		if !ok {
			fatal(fmt.Errorf("unknown phase %q", name))
		}
		pdir := filepath.Join(dir, fmt.Sprintf("phase-%d", i))
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			fatal(err)
		}
		limits := ""
		if ph.limited {
			limits = fmt.Sprintf("    limits: {max_series: %d, ingestion_rate: %g}\n", *euMaxSeries, *euRate)
		}
		if err := writeConfig(pdir, limits); err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "phase %s\n", ph.name)
		r, err := runPhase(ph, *fgBin, pdir, fmt.Sprintf("127.0.0.1:%d", *port), *duration, *version,
			load.RWConfig{Clusters: 1, FirstCluster: 0, SeriesPerCluster: *usSeries, BatchSeries: *usBatch, Concurrency: 2, Interval: *usInterval},
			load.RWConfig{Clusters: 1, FirstCluster: 1, SeriesPerCluster: *euSeries, BatchSeries: *euBatch, Concurrency: *euConc})
		if err != nil {
			fatal(fmt.Errorf("phase %s: %w (log: %s)", ph.name, err, filepath.Join(pdir, "log")))
		}
		results = append(results, r)
	}
	fmt.Printf("us-1: %d series every %s (%d per request); eu-1: %d series, %d per request, %d concurrent, as fast as it can; limited: max_series %d, ingestion_rate %g/s; remote-write %d.0, %s per phase\n\n",
		*usSeries, *usInterval, *usBatch, *euSeries, *euBatch, *euConc, *euMaxSeries, *euRate, *version, *duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tus-1 acked/sent\tus-1 p50\tus-1 p99\tus-1 max\teu-1 requests by status\teu-1 acked samples\teu-1 active series\tfleetgate CPU-s\tloadavg\t")
	for _, r := range results {
		euReq, euAcked := "-", "-"
		if r.eu != nil {
			euReq, euAcked = r.euStatusStr, fmt.Sprint(r.eu.AckedSamples)
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t\n", r.phase, r.us.AckedSamples, r.us.SentSamples,
			round(r.us.Quantile(0.5)), round(r.us.Quantile(0.99)), round(r.us.Quantile(1)), euReq, euAcked, r.euSeries, r.cpu.Seconds(), r.loadAvg)
	}
	tw.Flush()
}

func round(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}

// writeConfig is cluster-0 (us-1, no limits) and cluster-1 (eu-1, with limits).
func writeConfig(dir, euLimits string) error {
	var b strings.Builder
	b.WriteString("clusters:\n")
	for c := range 2 {
		name := load.ClusterName(c)
		tf := filepath.Join(dir, name+".token")
		if err := os.WriteFile(tf, []byte("bench-token-"+name+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "  - name: %s\n    credentials: {bearer_token_file: %s}\n", name, tf)
		if c == 1 {
			b.WriteString(euLimits)
		}
	}
	return os.WriteFile(filepath.Join(dir, "fleetgate.yml"), []byte(b.String()), 0o644)
}

func runPhase(ph phase, bin, dir, addr string, dur time.Duration, version int, us, eu load.RWConfig) (result, error) {
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return result{}, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "fleetgate.yml"), "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--otlp.grpc-listen-address=", "--otlp.http-listen-address=", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stop(cmd, exited)
	base := "http://" + addr
	if err := waitReady(base+"/-/ready", exited); err != nil {
		return result{}, err
	}
	for _, c := range []*load.RWConfig{&us, &eu} {
		c.URL, c.Version, c.TokenPrefix, c.SamplesPerSeries = base+"/api/v1/write", version, "bench-token-", 1
		c.Timeout = time.Minute
	}
	// Warm up: us-1 creates its series.
	us.Rounds, us.Step, us.Start = 2, us.Interval, time.Now().Add(-2*us.Interval)
	if _, err := load.RunRW(context.Background(), us); err != nil {
		return result{}, fmt.Errorf("us-1 warm-up: %w", err)
	}
	pid := cmd.Process.Pid
	cpu0, err := load.ProcCPU(pid)
	if err != nil {
		return result{}, err
	}
	// us-1 runs its rounds (the measurement); eu-1 floods until us-1 is
	// done (its requests cut then are counted under status 0).
	ctx, cancel := context.WithTimeout(context.Background(), 3*dur)
	defer cancel()
	euCtx, euCancel := context.WithCancel(ctx)
	defer euCancel()
	r := result{phase: ph.name, euSeries: "-"}
	euDone := make(chan *load.RWResult, 1)
	if ph.noisy {
		// eu-1 sends round after round, each sample 1 ms after the last round's.
		eu.Rounds, eu.Step, eu.Start = 1<<30, time.Millisecond, time.Now()
		go func() {
			res, err := load.RunRW(euCtx, eu)
			if err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintln(os.Stderr, "eu-1:", err)
			}
			euDone <- res
		}()
	}
	us.Rounds, us.Start = max(int(dur/us.Interval), 1), time.Now()
	res, err := load.RunRW(ctx, us)
	if err != nil {
		return r, fmt.Errorf("us-1: %w", err)
	}
	r.us = res
	euCancel()
	if ph.noisy {
		r.eu = <-euDone
		r.euStatusStr = statusString(r.eu.ByStatus)
	}
	cpu1, err := load.ProcCPU(pid)
	if err != nil {
		return r, err
	}
	r.cpu, r.loadAvg = cpu1-cpu0, load.LoadAvg()
	if n, err := activeSeries(base, load.ClusterName(1)); err == nil {
		r.euSeries = n
	}
	fmt.Fprintf(os.Stderr, "  us-1: %s\n", r.us)
	if r.eu != nil {
		fmt.Fprintf(os.Stderr, "  eu-1: %s\n", r.eu)
	}
	return r, nil
}

func statusString(m map[int]int64) string {
	var codes []int
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d:%d", c, m[c]))
	}
	return strings.Join(parts, " ")
}

// activeSeries reads fleetgate_cluster_active_series of a cluster.
func activeSeries(base, cluster string) (string, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	prefix := fmt.Sprintf("fleetgate_cluster_active_series{cluster=%q} ", cluster)
	for _, l := range strings.Split(sb.String(), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v, nil
		}
	}
	return "", errors.New("not found")
}

func waitReady(u string, exited <-chan error) error {
	deadline := time.After(time.Minute)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("fleetgate exited before it was ready: %v", err)
		case <-deadline:
			return fmt.Errorf("fleetgate not ready at %s", u)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop ends the fleetgate we started: SIGTERM, then SIGKILL after a minute.
func stop(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// cleanup removes the temporary work dir, also when fatal exits.
var cleanup = func() {}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "neighbour:", err)
	cleanup()
	os.Exit(1)
}
