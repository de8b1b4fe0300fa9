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
// eu-1's load runs in a child process at niceness 19 (-eu-nice): it stands
// for a sender on another machine, whose encoding work should compete as
// little as possible with fleetgate and us-1 on the one machine we have.
// It ignores Retry-After, as a misbehaving sender would.
//
// It prints, per phase, us-1's acceptance and write latency (p50/p99) as the
// sender saw it, eu-1's answers by status, fleetgate's CPU-seconds and the
// generators'. The first rounds of us-1 (which create its series) are not
// measured.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
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
	cpu, genCPU time.Duration // fleetgate's, and the load generators' (both processes)
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
		euNice      = flag.Int("eu-nice", 19, "scheduling niceness of eu-1's load generator process (it stands for a sender on another machine)")
		euChild     = flag.String("eu-child", "", "internal: run only eu-1's load against this URL until interrupted, print the result as JSON")
	)
	flag.Parse()
	if *euChild != "" {
		os.Exit(runEUChild(*euChild, *version, load.RWConfig{Clusters: 1, FirstCluster: 1, SeriesPerCluster: *euSeries, BatchSeries: *euBatch, Concurrency: *euConc}))
	}
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "fleetgate-neighbour-")
		if err != nil {
			fatal(err)
		}
		dir = d
		cleanup = func() { warn(os.RemoveAll(d)) }
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
		r, err := runPhase(ph, *fgBin, pdir, fmt.Sprintf("127.0.0.1:%d", *port), *duration, *version, *euNice,
			load.RWConfig{Clusters: 1, FirstCluster: 0, SeriesPerCluster: *usSeries, BatchSeries: *usBatch, Concurrency: 2, Interval: *usInterval})
		if err != nil {
			fatal(fmt.Errorf("phase %s: %w (log: %s)", ph.name, err, filepath.Join(pdir, "log")))
		}
		results = append(results, r)
	}
	fmt.Printf("us-1: %d series every %s (%d per request); eu-1: %d series, %d per request, %d concurrent, as fast as it can; limited: max_series %d, ingestion_rate %g/s; remote-write %d.0, %s per phase\n\n",
		*usSeries, *usInterval, *usBatch, *euSeries, *euBatch, *euConc, *euMaxSeries, *euRate, *version, *duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tus-1 acked/sent\tus-1 p50\tus-1 p99\tus-1 max\teu-1 requests by status\teu-1 acked samples\teu-1 active series\tfleetgate CPU-s\tgenerator CPU-s\tloadavg\t")
	for _, r := range results {
		euReq, euAcked := "-", "-"
		if r.eu != nil {
			euReq, euAcked = r.euStatusStr, fmt.Sprint(r.eu.AckedSamples)
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t\n", r.phase, r.us.AckedSamples, r.us.SentSamples,
			round(r.us.Quantile(0.5)), round(r.us.Quantile(0.99)), round(r.us.Quantile(1)), euReq, euAcked, r.euSeries, r.cpu.Seconds(), r.genCPU.Seconds(), r.loadAvg)
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

func runPhase(ph phase, bin, dir, addr string, dur time.Duration, version, niceness int, us load.RWConfig) (result, error) {
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return result{}, err
	}
	defer func() { warn(logf.Close()) }()
	srv, err := load.StartServer(bin, []string{"--config.file=" + filepath.Join(dir, "fleetgate.yml"), "--storage.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr, "--otlp.grpc-listen-address=", "--otlp.http-listen-address=", "--log.level=warn"}, logf)
	if err != nil {
		return result{}, err
	}
	defer func() { warn(srv.Stop()) }()
	base := "http://" + addr
	readyCtx, readyCancel := context.WithTimeout(context.Background(), time.Minute)
	defer readyCancel()
	if err := srv.WaitReady(readyCtx, base+"/-/ready"); err != nil {
		return result{}, fmt.Errorf("fleetgate: %w", err)
	}
	us.URL, us.Version, us.TokenPrefix, us.SamplesPerSeries, us.Timeout = base+"/api/v1/write", version, "bench-token-", 1, time.Minute
	// Warm up: us-1 creates its series.
	us.Rounds, us.Step, us.Start = 2, us.Interval, time.Now().Add(-2*us.Interval)
	if _, err := load.RunRW(context.Background(), us); err != nil {
		return result{}, fmt.Errorf("us-1 warm-up: %w", err)
	}
	pid := srv.Pid()
	cpu0, err := load.ProcCPU(pid)
	if err != nil {
		return result{}, err
	}
	gen0 := selfCPU()
	// us-1 runs its rounds (the measurement); eu-1 floods, from its own
	// process, until us-1 is done (its requests cut then count as status 0).
	ctx, cancel := context.WithTimeout(context.Background(), 3*dur)
	defer cancel()
	r := result{phase: ph.name, euSeries: "-"}
	var child *euLoad
	if ph.noisy {
		if child, err = startEUChild(base+"/api/v1/write", version, niceness); err != nil {
			return r, err
		}
		defer child.kill()
	}
	us.Rounds, us.Start = max(int(dur/us.Interval), 1), time.Now()
	res, err := load.RunRW(ctx, us)
	if err != nil {
		return r, fmt.Errorf("us-1: %w", err)
	}
	r.us = res
	if child != nil {
		if r.eu, err = child.stop(); err != nil {
			return r, fmt.Errorf("eu-1's load: %w", err)
		}
		r.euStatusStr = statusString(r.eu.ByStatus)
		r.genCPU += child.cpu
	}
	cpu1, err := load.ProcCPU(pid)
	if err != nil {
		return r, err
	}
	r.cpu, r.loadAvg = cpu1-cpu0, load.LoadAvg()
	r.genCPU += selfCPU() - gen0
	if n, err := activeSeries(base, load.ClusterName(1)); err == nil {
		r.euSeries = n
	}
	fmt.Fprintf(os.Stderr, "  us-1: %s\n", r.us)
	return r, nil
}

// euLoad is eu-1's load generator: this program run with -eu-child.
type euLoad struct {
	cmd    *exec.Cmd
	out    strings.Builder
	exited chan error
	cpu    time.Duration
}

// startEUChild starts eu-1's load in its own process at the given niceness,
// so that its encoding work competes less with fleetgate and us-1: it
// stands for a sender on another machine.
func startEUChild(url string, version, niceness int) (*euLoad, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-eu-child", url, "-rw-version", fmt.Sprint(version)}, euArgs()...)
	e := &euLoad{cmd: exec.Command(self, args...), exited: make(chan error, 1)}
	e.cmd.Stdout, e.cmd.Stderr = &e.out, os.Stderr
	if err := e.cmd.Start(); err != nil {
		return nil, err
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, e.cmd.Process.Pid, niceness); err != nil {
		fmt.Fprintln(os.Stderr, "setpriority:", err)
	}
	go func() { e.exited <- e.cmd.Wait() }()
	return e, nil
}

// euArgs passes the eu-* flags on to the child.
func euArgs() []string {
	var out []string
	flag.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "eu-") && f.Name != "eu-child" {
			out = append(out, "-"+f.Name, f.Value.String())
		}
	})
	return out
}

// stop interrupts the child and reads its result.
func (e *euLoad) stop() (*load.RWResult, error) {
	_ = e.cmd.Process.Signal(os.Interrupt)
	if err := <-e.exited; err != nil {
		return nil, fmt.Errorf("%w: %s", err, e.out.String())
	}
	if ps := e.cmd.ProcessState; ps != nil {
		e.cpu = ps.UserTime() + ps.SystemTime()
	}
	var res load.RWResult
	if err := json.Unmarshal([]byte(e.out.String()), &res); err != nil {
		return nil, fmt.Errorf("reading its result: %w", err)
	}
	return &res, nil
}

func (e *euLoad) kill() {
	if e.cmd.ProcessState == nil {
		_ = e.cmd.Process.Kill()
	}
}

// runEUChild floods url as eu-1 until interrupted and prints the result.
func runEUChild(url string, version int, eu load.RWConfig) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	// Each round's samples are 1 ms after the last round's.
	eu.URL, eu.Version, eu.TokenPrefix, eu.SamplesPerSeries, eu.Timeout = url, version, "bench-token-", 1, time.Minute
	eu.Rounds, eu.Step, eu.Start = 1<<30, time.Millisecond, time.Now()
	res, err := load.RunRW(ctx, eu)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "eu-1:", err)
		return 1
	}
	res.Latencies = nil
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "eu-1:", err)
		return 1
	}
	return 0
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// cleanup removes the temporary work dir, also when fatal exits.
var cleanup = func() {}

// warn reports a failed cleanup step (the measurement stands).
func warn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "neighbour: warning:", err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "neighbour:", err)
	cleanup()
	os.Exit(1)
}
