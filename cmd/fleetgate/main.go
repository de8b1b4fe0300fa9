// Command fleetgate is the observability aggregation gateway for a fleet of
// Kubernetes clusters. main reads as the list of its parts.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/ingest/promrw"
	"github.com/fleetgate/fleetgate/query"
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
	set           map[string]string

	otlpGRPCAddress string
	otlpHTTPAddress string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(checkCommand(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "drill" {
		os.Exit(drillCommand(os.Args[2:]))
	}
	if err := serve(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fleetgate:", err)
		os.Exit(1)
	}
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
			_, err = fleet.NewRegistry(cfg.fleet()) // reads the secrets too
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
	if err := fs.Parse(args); err != nil {
		return nil, err
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
		cfg.Storage.Retention = model.Duration(15 * 24 * time.Hour)
	}
	if cfg.Storage.MaxExemplars == 0 {
		cfg.Storage.MaxExemplars = 100_000
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

func serve(args []string) error {
	f, err := parseFlags(args)
	if err != nil {
		return err
	}
	logger, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(f.configFile)
	if err != nil {
		return err
	}
	if err := applyFlags(cfg, f); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Identity: credentials -> clusters.
	fleetReg, err := fleet.NewRegistry(cfg.fleet())
	if err != nil {
		return err
	}
	if fleetReg.DevMode() {
		logger.Warn("no clusters configured: dev mode, identity comes from the sender and is unverified")
	}

	// Storage: the embedded TSDB (WAL replay happens here) or, in
	// forward-only mode, the agent WAL; forward queues tail the WAL. The
	// TSDB counts each cluster's series for limits.max_series.
	seriesLimit, err := pipeline.NewSeriesLimiter(fleetReg, nil)
	if err != nil {
		return err
	}
	st, err := openStorage(cfg, reg, logger, metrics.WithSeriesLifecycle(seriesLimit))
	if err != nil {
		return err
	}
	defer st.close(logger)
	var seriesTracker *pipeline.SeriesTracker
	if st.store != nil {
		seriesLimit.Enforce() // after WAL replay: series already written are never refused
		if err := reg.Register(seriesLimit); err != nil {
			return fmt.Errorf("registering series limit metrics: %w", err)
		}
		fleetReg.SetSeriesCounter(seriesLimit)
	} else {
		// Forward-only: the agent WAL has no series hook; the pipeline tracks.
		if seriesTracker, err = pipeline.NewSeriesTracker(fleetReg, reg); err != nil {
			return err
		}
		fleetReg.SetSeriesCounter(seriesTracker)
	}

	// Federation: remote clusters as query sources, HA tracker, forwarding.
	fed, err := setupFederation(cfg, fleetReg, st.local, cfg.Storage.Path, reg, logger)
	if err != nil {
		return err
	}
	defer fed.close()

	// Ingest: pipeline and receivers.
	pipe, err := pipeline.New(cfg.Ingest, fleetReg, st.sink, st.meta, reg, logger)
	if err != nil {
		return err
	}
	pipe.SetHATracker(fed.ha)
	pipe.SetSeriesTracker(seriesTracker)
	rw, err := promrw.NewHandler(cfg.RemoteWrite, pipe, reg, logger)
	if err != nil {
		return err
	}

	// Query: PromQL over the stores, Prometheus HTTP API.
	engine := query.NewEngine(cfg.Query, reg, logger)
	api, err := query.New(engine, query.Options{
		Config: cfg.Query, Queryable: fed.queryable(), Exemplars: st.exemplars, TSDB: st.tsdb, TSDBDir: cfg.Storage.Path,
		Metadata: st.meta, Flags: f.set, Registerer: reg, Gatherer: reg, Logger: logger,
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/write", rw)
	mux.Handle("POST /api/v1/push", rw)
	api.Register(mux)
	fed.register(mux)
	mux.HandleFunc("GET /api/v1/clusters", func(w http.ResponseWriter, r *http.Request) {
		query.WriteSuccess(w, fleetReg.Statuses())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "fleetgate is Healthy.") })
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "fleetgate is Ready.") })
	if f.enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	var g run.Group
	fed.actors(&g)
	// Logs and traces: OTLP and Loki receivers, embedded stores, forwarders.
	closeLogsTraces, err := setupLogsTraces(f, &cfg.logsTracesConfig, fleetReg, pipe, mux, &g, reg, logger)
	defer closeLogsTraces()
	if err != nil {
		return err
	}
	// Health scoring, failover decisions and their signals, over every cluster.
	if err := setupHealthFailover(cfg, fleetReg, health.NewEngineQuerier(engine, fed.queryable()), f.listenAddress, mux, &g, reg, logger); err != nil {
		return err
	}
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
	{
		srv, ln, err := listen(f, mux, logger)
		if err != nil {
			return err
		}
		g.Add(func() error {
			logger.Info("fleetgate listening", "address", ln.Addr().String(), "clusters", len(cfg.Clusters), "storage", cfg.Storage.Path)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("HTTP server: %w", err)
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				logger.Warn("HTTP shutdown", "err", err)
			}
		})
	}
	return g.Run()
}

func listen(f *flags, h http.Handler, logger *slog.Logger) (*http.Server, net.Listener, error) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", f.listenAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("--web.listen-address %s: %w", f.listenAddress, err)
	}
	if f.tlsCert == "" && f.tlsKey == "" {
		if f.clientCA != "" {
			ln.Close()
			return nil, nil, errors.New("--web.client-ca-file needs --web.tls-cert-file and --web.tls-key-file")
		}
		return srv, ln, nil
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("--web.tls-cert-file/--web.tls-key-file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("--web.client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			ln.Close()
			return nil, nil, fmt.Errorf("--web.client-ca-file %s: no PEM certificates", f.clientCA)
		}
		tc.ClientCAs = pool
		// Clients may still authenticate with a bearer token instead.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	srv.TLSConfig = tc
	return srv, tls.NewListener(ln, tc), nil
}
