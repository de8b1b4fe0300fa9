// Command fleetgate is the observability aggregation gateway for a fleet of
// Kubernetes clusters. main reads as the list of its parts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/ingest/promrw"
	"github.com/fleetgate/fleetgate/query/promapi"
	"github.com/fleetgate/fleetgate/store/metrics"
)

type flags struct {
	configFile    string
	listenAddress string
	tlsCert       string
	tlsKey        string
	clientCA      string
	storagePath   string
	retention     string
	logLevel      string
	logFormat     string
	queryTimeout  string
	maxSamples    int
	lookback      string
	enablePprof   bool
	webConfigFile string
	set           map[string]string

	otlpGRPCAddress string
	otlpHTTPAddress string
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// commands are fleetgate's subcommands; with none (or a flag first) it serves.
var commands = [][2]string{
	{"[flags]", "serve (fleetgate --help lists the flags)"},
	{"check config FILE...", "validate configuration files"},
	{"drill --cluster NAME", "simulate a cluster going dark on a running fleetgate"},
	{"storage drop-future ...", "repair a TSDB poisoned by far-future samples (offline)"},
	{"help", "this list"},
}

func usage(w io.Writer) {
	for i, c := range commands {
		lead := "       "
		if i == 0 {
			lead = "usage: "
		}
		fmt.Fprintf(w, "%sfleetgate %-24s %s\n", lead, c[0], c[1])
	}
}

// dispatch runs the subcommand named by args[0], or the server when args is
// empty or starts with a flag. Anything else is refused with the usage, as
// promtool does: a typo must not start a server on the default ports.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "check":
			return checkCommand(args[1:])
		case "storage":
			return storageCommand(args[1:], stdout, stderr)
		case "drill":
			return drillCommand(args[1:])
		case "help":
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "fleetgate: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	f, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate:", err)
		return 2
	}
	if err := serve(f); err != nil {
		fmt.Fprintln(stderr, "fleetgate:", err)
		return 1
	}
	return 0
}

// checkCommand implements `fleetgate check config FILE...`.
func checkCommand(args []string) int {
	if len(args) < 2 || args[0] != "config" {
		fmt.Fprintln(os.Stderr, "usage: fleetgate check config FILE...")
		return 2
	}
	rc := 0
	for _, f := range args[1:] {
		cfg, err := loadConfig(f)
		if err == nil {
			var reg *fleet.Registry
			if reg, err = fleet.NewRegistry(cfg.fleet()); err == nil { // reads the secrets too
				_, err = access.New(cfg.Auth, access.Options{DevMode: reg.DevMode(), ClusterToken: access.ClusterTokenOf(reg)})
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
			rc = 1
			continue
		}
		fmt.Printf("SUCCESS: %s is valid (%d clusters)\n", f, len(cfg.Clusters))
	}
	return rc
}

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("fleetgate", flag.ContinueOnError)
	fs.StringVar(&f.configFile, "config.file", "", "fleetgate YAML config file; empty runs on embedded defaults (dev mode)")
	fs.StringVar(&f.listenAddress, "web.listen-address", ":9201", "address for the HTTP API, remote-write, Loki push and OTLP/HTTP")
	fs.StringVar(&f.tlsCert, "web.tls-cert-file", "", "TLS certificate for the HTTP listener")
	fs.StringVar(&f.tlsKey, "web.tls-key-file", "", "TLS key for the HTTP listener")
	fs.StringVar(&f.clientCA, "web.client-ca-file", "", "CA bundle that verifies client certificates (mTLS cluster identity)")
	fs.StringVar(&f.webConfigFile, "web.config.file", "", "Prometheus web config (TLS, client certificates, basic auth) for the HTTP listeners; not with --web.tls-*/--web.client-ca-file")
	fs.StringVar(&f.storagePath, "storage.path", "data/", "directory of the embedded stores")
	fs.StringVar(&f.retention, "storage.retention", "", "how long to keep samples (default 15d, or storage.retention in the config)")
	fs.StringVar(&f.logLevel, "log.level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log.format", "logfmt", "logfmt or json")
	fs.StringVar(&f.queryTimeout, "query.timeout", "", "maximum time a query may take (default 2m)")
	fs.IntVar(&f.maxSamples, "query.max-samples", 0, "maximum samples a single query may load (default 50000000)")
	fs.StringVar(&f.lookback, "query.lookback-delta", "", "how far back to look for a sample of an instant vector (default 5m)")
	fs.BoolVar(&f.enablePprof, "web.enable-pprof", false, "serve /debug/pprof")
	fs.StringVar(&f.otlpGRPCAddress, "otlp.grpc-listen-address", ":4317", "address for OTLP/gRPC (metrics, logs, traces); empty disables")
	fs.StringVar(&f.otlpHTTPAddress, "otlp.http-listen-address", ":4318", "address for OTLP/HTTP (/v1/{metrics,logs,traces}, also served on --web.listen-address); empty disables")
	fs.Usage = func() {
		usage(fs.Output())
		fmt.Fprintln(fs.Output(), "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags are --name=value; subcommands come first: fleetgate help)", fs.Arg(0))
	}
	f.set = map[string]string{}
	fs.VisitAll(func(fl *flag.Flag) { f.set[fl.Name] = fl.Value.String() })
	return f, nil
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "logfmt", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log.format: %q is not one of logfmt, json", format)
}

// applyFlags lets flags override the config file.
func applyFlags(cfg *Config, f *flags) error {
	cfg.Storage.Path = f.storagePath
	if f.retention != "" {
		d, err := model.ParseDuration(f.retention)
		if err != nil {
			return fmt.Errorf("--storage.retention: %w", err)
		}
		cfg.Storage.Retention = d
	}
	if cfg.Storage.Retention == 0 {
		cfg.Storage.Retention = metrics.DefaultConfig().Retention
	}
	if f.queryTimeout != "" {
		d, err := model.ParseDuration(f.queryTimeout)
		if err != nil {
			return fmt.Errorf("--query.timeout: %w", err)
		}
		cfg.Query.Timeout = d
	}
	if f.lookback != "" {
		d, err := model.ParseDuration(f.lookback)
		if err != nil {
			return fmt.Errorf("--query.lookback-delta: %w", err)
		}
		cfg.Query.LookbackDelta = d
	}
	if f.maxSamples != 0 {
		cfg.Query.MaxSamples = f.maxSamples
	}
	return cfg.Validate()
}

func serve(f *flags) error {
	logger, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(f.configFile)
	if err != nil {
		return err
	}
	configLoaded = time.Now()
	if err := applyFlags(cfg, f); err != nil {
		return err
	}
	if err := checkWebFlags(f); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	a, err := newApp(f, cfg, reg, logger)
	if err != nil {
		return err
	}
	defer a.close()
	g := &a.group
	// Termination on SIGINT/SIGTERM.
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sig)
			select {
			case s := <-sig:
				logger.Info("received signal, shutting down", "signal", s.String())
			case <-ctx.Done():
			}
			return nil
		}, func(error) { cancel() })
	}
	// HTTP server.
	queryTimeout := time.Duration(cfg.Query.Timeout)
	if queryTimeout == 0 {
		queryTimeout = time.Duration(promapi.DefaultConfig().Timeout)
	}
	l, err := listen(f, f.listenAddress, a.routes, queryTimeout+writeMargin, logger)
	if err != nil {
		return fmt.Errorf("--web.listen-address: %w", err)
	}
	addServer(g, l, "fleetgate listening", logger, "clusters", len(cfg.Clusters), "storage", cfg.Storage.Path)
	return g.Run()
}

// readiness is /-/ready: 200 while every part can take writes, else 503
// naming each part that cannot (a failed WAL, a poisoned TSDB, a full disk).
type readiness struct {
	checks []func() error
}

func (rd *readiness) add(check func() error) { rd.checks = append(rd.checks, check) }

func (rd *readiness) err() error {
	var errs []error
	for _, c := range rd.checks {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (rd *readiness) serve(w http.ResponseWriter, _ *http.Request) {
	if err := rd.err(); err != nil {
		http.Error(w, "fleetgate is not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "fleetgate is Ready.")
}

// addServer serves l in g until g stops.
func addServer(g *run.Group, l *httpListener, msg string, logger *slog.Logger, kv ...any) {
	g.Add(func() error {
		logger.Info(msg, append([]any{"address", l.Addr().String()}, kv...)...)
		if err := l.Serve(); err != nil {
			return fmt.Errorf("HTTP server %s: %w", l.Addr(), err)
		}
		return nil
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.srv.Shutdown(ctx); err != nil {
			logger.Warn("HTTP shutdown", "err", err)
		}
	})
}

// app is fleetgate's parts wired together: the routes of the main
// listener and the actors of the run group (the main listener itself is
// added by serve).
type app struct {
	routes  *routes
	group   run.Group
	closers []func()
}

// close releases the stores, newest first.
func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// newApp builds every part from the validated config. On error, what was
// opened is closed.
func newApp(f *flags, cfg *Config, reg *prometheus.Registry, logger *slog.Logger) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			a.close()
		}
	}()

	// Identity: credentials -> clusters.
	fleetReg, err := fleet.NewRegistry(cfg.fleet())
	if err != nil {
		return nil, err
	}
	if fleetReg.DevMode() {
		logger.Warn("no clusters configured: dev mode, identity comes from the sender and is unverified")
	}
	// Access: who may read and who may change state.
	auth, err := newAuthenticator(f, cfg, fleetReg, logger)
	if err != nil {
		return nil, err
	}
	if auth.AnonymousRead() {
		logger.Warn("anonymous read is on: every read API answers requests without a credential (auth.anonymous_read)")
	}

	// Storage: the embedded TSDB (WAL replay happens here) or, in
	// forward-only mode, the agent WAL; forward queues tail the WAL. The
	// TSDB counts each cluster's series for limits.max_series.
	seriesLimit, err := pipeline.NewSeriesLimiter(fleetReg, nil)
	if err != nil {
		return nil, err
	}
	st, err := openStorage(cfg, reg, logger, metrics.WithSeriesLifecycle(seriesLimit), metrics.WithMaxFuture(time.Duration(cfg.Ingest.MaxFuture)))
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() { st.close(logger) })
	// The store's watcher: free space, the reopen after a WAL failure,
	// metadata saves.
	{
		var run func(context.Context) error
		if st.store != nil {
			run = st.store.Run
		} else {
			run = st.agent.Run
		}
		ctx, cancel := context.WithCancel(context.Background())
		a.group.Add(func() error { return run(ctx) }, func(error) { cancel() })
	}
	var seriesTracker *pipeline.SeriesTracker
	if st.store != nil {
		seriesLimit.Enforce() // after WAL replay: series already written are never refused
		if err := reg.Register(seriesLimit); err != nil {
			return nil, fmt.Errorf("registering series limit metrics: %w", err)
		}
		fleetReg.SetSeriesCounter(seriesLimit)
	} else {
		// Forward-only: the agent WAL has no series hook; the pipeline tracks.
		if seriesTracker, err = pipeline.NewSeriesTracker(fleetReg, reg); err != nil {
			return nil, err
		}
		fleetReg.SetSeriesCounter(seriesTracker)
	}

	// Federation: remote clusters as query sources, HA tracker, forwarding.
	fed, err := setupFederation(cfg, fleetReg, st.local, cfg.Storage.Path, reg, logger)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, fed.close)

	// Ingest: pipeline and receivers.
	pipe, err := pipeline.New(cfg.Ingest, fleetReg, st.sink, st.meta, reg, logger)
	if err != nil {
		return nil, err
	}
	if fed.ha != nil { // a nil *ha.Tracker must not become a non-nil interface
		pipe.SetHATracker(fed.ha)
	}
	pipe.SetSeriesTracker(seriesTracker)
	rw, err := promrw.NewHandler(cfg.RemoteWrite, pipe, reg, logger)
	if err != nil {
		return nil, err
	}

	// Query: PromQL over the stores, Prometheus HTTP API. The API reads
	// through the reader's scope (fail-closed); health and drills read the
	// unscoped federation.
	engine := promapi.NewEngine(cfg.Query, reg, logger)
	var exemplars storage.ExemplarQueryable
	if st.exemplars != nil {
		exemplars = access.NewExemplarQueryable(st.exemplars)
	}
	api, err := promapi.New(engine, promapi.Options{
		Config: cfg.Query, Queryable: access.NewQueryable(fed.queryable()), Exemplars: exemplars, TSDB: st.tsdb, TSDBDir: cfg.Storage.Path,
		Metadata: st.meta, Flags: f.set, Registerer: reg, Gatherer: reg, Logger: logger,
		StartTime: processStart, ConfigTime: configLoaded, StorageRetention: storageRetention(cfg.Storage, st.tsdb != nil),
	})
	if err != nil {
		return nil, err
	}

	rt := newRoutes(auth, ingestLimit(cfg))
	a.routes = rt
	ingest, read, public := rt.on(classIngest), rt.on(classRead), rt.on(classPublic)
	ingest.Handle("POST /api/v1/write", rw)
	ingest.Handle("POST /api/v1/push", rw)
	api.Register(read)
	fed.register(rt)
	rt.mountClusters(fleetReg)
	read.Handle("GET /metrics", access.RequireAllClusters(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})))
	public.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "fleetgate is Healthy.") })
	ready := &readiness{}
	ready.add(st.ready)
	public.HandleFunc("GET /-/ready", ready.serve)
	if f.enablePprof {
		admin := rt.on(classAdmin)
		admin.HandleFunc("/debug/pprof/", pprof.Index)
		admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	fed.actors(&a.group)
	// Logs and traces: OTLP and Loki receivers, embedded stores, forwarders.
	closeLogsTraces, err := setupLogsTraces(f, &cfg.logsTracesConfig, fleetReg, pipe, rt, &a.group, ready, reg, logger)
	a.closers = append(a.closers, closeLogsTraces)
	if err != nil {
		return nil, err
	}
	// Health scoring, failover decisions and their signals, over every cluster.
	if err := setupHealthFailover(cfg, fleetReg, health.NewEngineQuerier(engine, fed.queryable()), st.ready, f.listenAddress, rt, &a.group, reg, logger); err != nil {
		return nil, err
	}
	return a, nil
}

// newAuthenticator builds the access part from auth: and the web config.
func newAuthenticator(f *flags, cfg *Config, fleetReg *fleet.Registry, logger *slog.Logger) (*access.Authenticator, error) {
	basic := &basicAuthCheck{path: f.webConfigFile}
	return access.New(cfg.Auth, access.Options{
		DevMode: fleetReg.DevMode(), BasicAuthVerified: basic.verified,
		ClusterToken: access.ClusterTokenOf(fleetReg), Logger: logger.With("component", "access"),
	})
}

// ingestLimit is the largest body an ingest route accepts.
func ingestLimit(cfg *Config) int64 {
	n := 16 << 20 // the receivers' default
	for _, v := range []int{cfg.RemoteWrite.MaxRequestBytes, cfg.LokiPush.MaxRequestBytes, cfg.OTLP.MaxRequestBytes} {
		n = max(n, v)
	}
	return int64(n)
}
