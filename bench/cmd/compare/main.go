// Command compare drives the same remote-write and query load into
// fleetgate, Prometheus and VictoriaMetrics, one at a time on loopback, and
// prints one table: samples per CPU-second of the receiver process (from
// /proc/<pid>/stat utime+stime), RSS per active series, p99 write latency and
// dashboard query latency on the same data.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/bench/load"
)

type system struct {
	name  string
	bin   string
	args  func(dir, addr string) []string
	ready string // path answering 200 when ready
	rw2   bool   // accepts remote-write 2.0
	setup func(dir string) error
}

type row struct {
	system                string
	steadyRate, totalRate float64
	rss, baseRSS          int64
	writeP99              time.Duration
	qP50, qP99            time.Duration
	qN, qErr, qEmpty      int
	acked, sent           int64
	load                  string
	cpuSteady, cpuTotal   time.Duration
	note                  string
}

func main() {
	var (
		cfg       load.RWConfig
		systems   = flag.String("systems", "fleetgate,prometheus,victoria-metrics", "systems to run, in order: fleetgate, prometheus, victoria-metrics, prometheus3")
		fgBin     = flag.String("fleetgate-bin", "", "fleetgate binary (default: go build into the work dir)")
		promBin   = flag.String("prometheus-bin", "/usr/bin/prometheus", "Prometheus 2.x binary")
		prom3Bin  = flag.String("prometheus3-bin", "", "Prometheus 3.x binary (built with go install, outside the repo)")
		vmBin     = flag.String("vm-bin", "/usr/bin/victoria-metrics", "VictoriaMetrics single-node binary")
		workDir   = flag.String("work-dir", "", "data and logs (default: a new temp dir, removed at the end)")
		port      = flag.Int("port", 19301, "loopback port for the system under test")
		qDuration = flag.Duration("query-duration", 60*time.Second, "query load per system")
		qConc     = flag.Int("query-concurrency", 2, "concurrent queries")
		qSkip     = flag.Bool("skip-queries", false, "measure ingest only")
		maxPerSys = flag.Duration("max-time", 20*time.Minute, "bound on each system's run")
		settle    = flag.Duration("settle", 10*time.Second, "wait after the load before reading RSS")
	)
	flag.IntVar(&cfg.Clusters, "clusters", 10, "sending clusters")
	flag.IntVar(&cfg.SeriesPerCluster, "series", 100000, "series per cluster")
	flag.IntVar(&cfg.Version, "rw-version", 1, "remote-write protocol: 1 or 2")
	flag.IntVar(&cfg.SamplesPerSeries, "samples", 1, "samples per series per request")
	flag.IntVar(&cfg.BatchSeries, "batch", 2000, "series per request")
	flag.IntVar(&cfg.Concurrency, "concurrency", 4, "concurrent remote-write requests")
	flag.IntVar(&cfg.Rounds, "rounds", 11, "rounds; the first creates the series and is left out of the steady-state rate")
	flag.DurationVar(&cfg.Step, "step", 15*time.Second, "timestamp distance between samples")
	flag.Parse()
	if cfg.Rounds < 2 {
		fatal(errors.New("-rounds must be at least 2"))
	}
	cfg.TokenPrefix = "bench-token-"
	cfg.Start = time.Now().Add(-time.Duration(cfg.Rounds*cfg.SamplesPerSeries) * cfg.Step).Truncate(time.Second)
	queryAt := cfg.Start.Add(time.Duration(cfg.Rounds*cfg.SamplesPerSeries) * cfg.Step)

	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "fleetgate-bench-")
		if err != nil {
			fatal(err)
		}
		dir = d
		cleanup = func() { warn(os.RemoveAll(d)) }
		defer cleanup()
	}
	if *fgBin == "" && strings.Contains(*systems, "fleetgate") {
		*fgBin = filepath.Join(dir, "fleetgate-bin")
		out, err := exec.Command("go", "build", "-o", *fgBin, "./cmd/fleetgate").CombinedOutput()
		if err != nil {
			fatal(fmt.Errorf("building fleetgate: %w\n%s", err, out))
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	all := map[string]system{
		"fleetgate": {name: "fleetgate", bin: *fgBin, ready: "/-/ready", rw2: true,
			setup: func(d string) error { return writeFleetgateConfig(d, cfg.Clusters, cfg.TokenPrefix) },
			args: func(d, a string) []string {
				return []string{"--config.file=" + filepath.Join(d, "fleetgate.yml"), "--storage.path=" + filepath.Join(d, "data"), "--web.listen-address=" + a, "--log.level=warn", "--web.enable-pprof"}
			}},
		"prometheus": {name: "prometheus-2", bin: *promBin, ready: "/-/ready",
			setup: writePromConfig,
			args: func(d, a string) []string {
				return []string{"--config.file=" + filepath.Join(d, "prometheus.yml"), "--storage.tsdb.path=" + filepath.Join(d, "data"), "--web.listen-address=" + a, "--web.enable-remote-write-receiver", "--log.level=warn"}
			}},
		"prometheus3": {name: "prometheus-3", bin: *prom3Bin, ready: "/-/ready", rw2: true,
			setup: writePromConfig,
			args: func(d, a string) []string {
				return []string{"--config.file=" + filepath.Join(d, "prometheus.yml"), "--storage.tsdb.path=" + filepath.Join(d, "data"), "--web.listen-address=" + a, "--web.enable-remote-write-receiver", "--log.level=warn"}
			}},
		"victoria-metrics": {name: "victoria-metrics", bin: *vmBin, ready: "/health",
			args: func(d, a string) []string {
				return []string{"-storageDataPath=" + filepath.Join(d, "data"), "-httpListenAddr=" + a, "-loggerLevel=WARN", "-retentionPeriod=10y"}
			}},
	}
	var rows []row
	for _, name := range strings.Split(*systems, ",") {
		sys, ok := all[strings.TrimSpace(name)]
		if !ok {
			fatal(fmt.Errorf("unknown system %q", name))
		}
		if sys.bin == "" {
			fatal(fmt.Errorf("%s: no binary (see -%s-bin)", name, name))
		}
		if cfg.Version == 2 && !sys.rw2 {
			rows = append(rows, row{system: sys.name, note: "no remote-write 2.0"})
			continue
		}
		sdir := filepath.Join(dir, sys.name)
		if err := os.MkdirAll(sdir, 0o755); err != nil {
			fatal(err)
		}
		if sys.setup != nil {
			if err := sys.setup(sdir); err != nil {
				fatal(err)
			}
		}
		fmt.Fprintf(os.Stderr, "== %s: %s %s\n", sys.name, sys.bin, strings.Join(sys.args(sdir, addr), " "))
		r, err := runSystem(sys, sdir, addr, cfg, queryAt, *qDuration, *qConc, *qSkip, *maxPerSys, *settle)
		if err != nil {
			fatal(fmt.Errorf("%s: %w", sys.name, err))
		}
		rows = append(rows, r)
		if *workDir == "" {
			warn(os.RemoveAll(filepath.Join(sdir, "data")))
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("\n%s  host=%s cpus=%d cpu=%q\n", time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), cpuModel())
	fmt.Printf("load: %d clusters x %d series = %d active series, remote-write %d.0, %d rounds x %d samples/series, batch %d, concurrency %d\n\n",
		cfg.Clusters, cfg.SeriesPerCluster, cfg.Clusters*cfg.SeriesPerCluster, cfg.Version, cfg.Rounds, cfg.SamplesPerSeries, cfg.BatchSeries, cfg.Concurrency)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tsamples/CPU-s steady\tsamples/CPU-s incl. creation\tRSS\tRSS/series\twrite p99\tquery p50\tquery p99\tqueries (err/empty)\tacked/sent\tloadavg\t")
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\t\n", r.system, r.note)
			continue
		}
		n := float64(cfg.Clusters * cfg.SeriesPerCluster)
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f MiB\t%.2f kB\t%s\t%s\t%s\t%d (%d/%d)\t%d/%d\t%s\t\n",
			r.system, r.steadyRate, r.totalRate, float64(r.rss)/(1<<20), float64(r.rss)/n/1000,
			r.writeP99.Round(time.Millisecond), r.qP50.Round(time.Millisecond), r.qP99.Round(time.Millisecond),
			r.qN, r.qErr, r.qEmpty, r.acked, r.sent, r.load)
	}
	tw.Flush()
	var prom *row
	for i := range rows {
		if strings.HasPrefix(rows[i].system, "prometheus") && rows[i].qP50 > 0 {
			prom = &rows[i]
			break
		}
	}
	if prom != nil {
		for _, r := range rows {
			if r.qP50 > 0 && r.system != prom.system {
				fmt.Printf("query p50 %s / %s = %.2f\n", r.system, prom.system, r.qP50.Seconds()/prom.qP50.Seconds())
			}
		}
	}
}

func runSystem(sys system, dir, addr string, cfg load.RWConfig, queryAt time.Time, qDur time.Duration, qConc int, qSkip bool, bound, settle time.Duration) (row, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return row{}, err
	}
	defer func() { warn(logf.Close()) }()
	srv, err := load.StartServer(sys.bin, sys.args(dir, addr), logf)
	if err != nil {
		return row{}, err
	}
	defer func() { warn(srv.Stop()) }()
	base := "http://" + addr
	if err := srv.WaitReady(ctx, base+sys.ready); err != nil {
		return row{}, fmt.Errorf("%w (log: %s)", err, filepath.Join(dir, "log"))
	}
	pid := srv.Pid()
	r := row{system: sys.name}
	r.baseRSS, _ = load.ProcRSS(pid)
	cpuStart, err := load.ProcCPU(pid)
	if err != nil {
		return r, err
	}
	var cpuAfterFirst time.Duration
	var ackedFirst int64
	cfg.URL = base + "/api/v1/write"
	cfg.OnRound = func(round int, acked int64) {
		if round == 0 {
			cpuAfterFirst, _ = load.ProcCPU(pid)
			ackedFirst = acked
		}
		fmt.Fprintf(os.Stderr, "  round %d: %d samples acknowledged, loadavg %s\n", round, acked, load.LoadAvg())
	}
	res, err := load.RunRW(ctx, cfg)
	if err != nil {
		return r, fmt.Errorf("remote-write load: %w", err)
	}
	cpuEnd, err := load.ProcCPU(pid)
	if err != nil {
		return r, err
	}
	r.load = load.LoadAvg()
	fmt.Fprintf(os.Stderr, "  %s\n", res)
	r.cpuSteady, r.cpuTotal = cpuEnd-cpuAfterFirst, cpuEnd-cpuStart
	r.steadyRate = float64(res.AckedSamples-ackedFirst) / r.cpuSteady.Seconds()
	r.totalRate = float64(res.AckedSamples) / r.cpuTotal.Seconds()
	r.writeP99 = res.Quantile(0.99)
	r.acked, r.sent = res.AckedSamples, res.SentSamples
	time.Sleep(settle)
	r.rss, _ = load.ProcRSS(pid)
	if !qSkip {
		q, err := load.RunQueries(ctx, load.QConfig{BaseURL: base, Queries: load.DashboardQueries(), Concurrency: qConc, Duration: qDur, MinRuns: 1, At: queryAt})
		if err != nil {
			return r, err
		}
		fmt.Fprintf(os.Stderr, "%s", q)
		r.qP50, r.qP99, r.qN, r.qErr, r.qEmpty = q.Quantile(0.5), q.Quantile(0.99), len(q.All), q.Errors, q.Empty
	}
	return r, nil
}

func writeFleetgateConfig(dir string, clusters int, tokenPrefix string) error {
	var b strings.Builder
	b.WriteString("clusters:\n")
	for c := 0; c < clusters; c++ {
		name := load.ClusterName(c)
		tf := filepath.Join(dir, name+".token")
		if err := os.WriteFile(tf, []byte(tokenPrefix+name+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "  - name: %s\n    credentials:\n      bearer_token_file: %s\n", name, tf)
	}
	return os.WriteFile(filepath.Join(dir, "fleetgate.yml"), []byte(b.String()), 0o644)
}

func writePromConfig(dir string) error {
	return os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte("global:\n  scrape_interval: 1m\n"), 0o644)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "?"
}

// cleanup removes the temporary work dir, also when fatal exits.
var cleanup = func() {}

// warn reports a failed cleanup step (the measurement stands).
func warn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: warning:", err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "compare:", err)
	cleanup()
	os.Exit(1)
}
