package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fleetgate/fleetgate/fleet"
	lokifwd "github.com/fleetgate/fleetgate/forward/loki"
	otlpfwd "github.com/fleetgate/fleetgate/forward/otlp"
	"github.com/fleetgate/fleetgate/forward/queue"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	lokiin "github.com/fleetgate/fleetgate/ingest/loki"
	"github.com/fleetgate/fleetgate/ingest/otlp"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/query/lokiapi"
	"github.com/fleetgate/fleetgate/query/tempoapi"
	"github.com/fleetgate/fleetgate/store/logs"
	"github.com/fleetgate/fleetgate/store/traces"
)

// logsTracesConfig is the part of Config owned by logs and traces
// (issue 5): OTLP and Loki receivers, embedded stores, forwarders.
type logsTracesConfig struct {
	OTLP          otlp.Config        `yaml:"otlp"`
	LokiPush      lokiin.Config      `yaml:"loki_push"`
	LogsTraces    logtrace.Config    `yaml:"logs_traces"`
	LogsStorage   logs.Config        `yaml:"logs_storage"`
	TracesStorage traces.Config      `yaml:"traces_storage"`
	ForwardLogs   []queue.HTTPConfig `yaml:"forward_logs"`
	ForwardTraces []queue.HTTPConfig `yaml:"forward_traces"`
}

// setupLogsTraces builds the log and trace parts, mounts their HTTP
// endpoints on mux and adds their actors (stores, forwarders, derived
// metrics, OTLP listeners) to g. The returned function closes the stores.
func setupLogsTraces(f *flags, cfg *logsTracesConfig, fleetReg *fleet.Registry, pipe *pipeline.Pipeline,
	rt *routes, g *run.Group, ready *readiness, reg prometheus.Registerer, logger *slog.Logger) (func(), error) {
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if err := closers[i](); err != nil {
				logger.Error("closing log/trace store", "err", err)
			}
		}
	}
	addRun := func(run func(context.Context) error) {
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return run(ctx) }, func(error) { cancel() })
	}
	var logSinks []logtrace.LogsSink
	var traceSinks []logtrace.TracesSink

	// Embedded stores (the default), with the Loki and Tempo read APIs.
	if !cfg.LogsStorage.Disabled {
		st, err := logs.Open(f.storagePath, cfg.LogsStorage, reg, logger)
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, st.Close)
		ready.add(st.Err)
		logSinks = append(logSinks, st)
		addRun(st.Run)
		lokiapi.New(st).Register(rt.on(classRead))
	}
	if !cfg.TracesStorage.Disabled {
		st, err := traces.Open(f.storagePath, cfg.TracesStorage, reg, logger)
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, st.Close)
		ready.add(st.Err)
		traceSinks = append(traceSinks, st)
		addRun(st.Run)
		tempoapi.New(st).Register(rt.on(classRead))
	}

	// Forwarders, each with a durable queue under <storage.path>/forward/.
	if len(cfg.ForwardLogs)+len(cfg.ForwardTraces) > 0 {
		m, err := queue.NewMetrics(reg)
		if err != nil {
			return closeAll, err
		}
		for _, fc := range cfg.ForwardLogs {
			fw, err := lokifwd.New(fc, filepath.Join(f.storagePath, "forward", "loki", fc.Name), m, logger)
			if err != nil {
				return closeAll, fmt.Errorf("forward_logs %s: %w", fc.Name, err)
			}
			closers = append(closers, fw.Close)
			logSinks = append(logSinks, fw)
			addRun(fw.Run)
		}
		for _, fc := range cfg.ForwardTraces {
			fw, err := otlpfwd.New(fc, filepath.Join(f.storagePath, "forward", "otlp", fc.Name), m, logger)
			if err != nil {
				return closeAll, fmt.Errorf("forward_traces %s: %w", fc.Name, err)
			}
			closers = append(closers, fw.Close)
			traceSinks = append(traceSinks, fw)
			addRun(fw.Run)
		}
	}

	// Identity, limits, fan-out and derived metrics. Log lines and spans
	// are refused beyond ingest.max_future and, with an embedded store,
	// older than its retention.
	sc := cfg.LogsTraces
	sc.MaxFuture = pipe.MaxFuture()
	if !cfg.LogsStorage.Disabled {
		sc.LogsMaxAge = orDefault(time.Duration(cfg.LogsStorage.Retention), 7*24*time.Hour) // logs.Config's default
	}
	if !cfg.TracesStorage.Disabled {
		sc.TracesMaxAge = orDefault(time.Duration(cfg.TracesStorage.Retention), 72*time.Hour) // traces.Config's default
	}
	sig, err := logtrace.New(sc, fleetReg, pipe, logSinks, traceSinks, reg, logger)
	if err != nil {
		return closeAll, err
	}
	addRun(sig.Run)

	// Receivers.
	lh, err := lokiin.NewHandler(cfg.LokiPush, sig, reg, logger)
	if err != nil {
		return closeAll, err
	}
	rt.on(classIngest).Handle("POST /loki/api/v1/push", lh)
	rc, err := otlp.New(cfg.OTLP, pipe, sig, reg, logger)
	if err != nil {
		return closeAll, err
	}
	rc.Register(rt.on(classIngest))

	if f.otlpHTTPAddress != "" {
		// Its own listener: ingest only, with the main listener's TLS (web
		// config or --web.tls-*) and timeouts.
		orts := newRoutes(rt.auth, rt.limits[classIngest])
		rc.Register(orts.on(classIngest))
		l, err := listen(f, f.otlpHTTPAddress, orts, time.Minute, logger)
		if err != nil {
			return closeAll, fmt.Errorf("--otlp.http-listen-address: %w", err)
		}
		addServer(g, l, "OTLP/HTTP listening", logger)
	}
	if f.otlpGRPCAddress != "" {
		opts := rc.ServerOptions()
		tc, err := grpcTLS(f)
		if err != nil {
			return closeAll, err
		}
		if tc != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
		}
		gs := grpc.NewServer(opts...)
		rc.RegisterGRPC(gs)
		ln, err := net.Listen("tcp", f.otlpGRPCAddress)
		if err != nil {
			return closeAll, fmt.Errorf("--otlp.grpc-listen-address %s: %w", f.otlpGRPCAddress, err)
		}
		g.Add(func() error {
			logger.Info("OTLP/gRPC listening", "address", ln.Addr().String())
			if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("OTLP/gRPC server: %w", err)
			}
			return nil
		}, func(error) {
			done := make(chan struct{})
			go func() { gs.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				gs.Stop()
			}
		})
	}
	return closeAll, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
