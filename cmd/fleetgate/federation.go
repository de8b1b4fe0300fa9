package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/forward/remotewrite"
	"github.com/fleetgate/fleetgate/ingest/ha"
	"github.com/fleetgate/fleetgate/internal/httpapi"
	queryfed "github.com/fleetgate/fleetgate/query/federation"
	"github.com/fleetgate/fleetgate/store/metrics"
)

const (
	haStateFile = "fleetgate-ha.json"
	haPinsFile  = "fleetgate-ha-pins.json" // written durably on every pin change
)

// federation is the scale-out part of fleetgate: remote clusters as query
// sources, the HA tracker, and forwarding to remote-write backends.
type federation struct {
	fed     *queryfed.Queryable
	ha      *ha.Tracker
	reg     *fleet.Registry
	dataDir string
	logger  *slog.Logger
}

// setupFederation builds the query sources of the clusters that name a
// query endpoint (plus forward.query) and the HA tracker. local is the embedded store (nil in forward-only
// mode, where forward.query is the only query source).
func setupFederation(cfg *Config, reg *fleet.Registry, local storage.SampleAndChunkQueryable, dataDir string, r prometheus.Registerer, logger *slog.Logger) (*federation, error) {
	f := &federation{reg: reg, dataDir: dataDir, logger: logger}
	m, err := queryfed.NewSourceMetrics(r)
	if err != nil {
		return nil, err
	}
	var sources []*queryfed.Source
	for _, cc := range cfg.Clusters {
		if cc.Query == nil {
			continue
		}
		c := reg.Get(cc.Name)
		b := labels.NewScratchBuilder(len(c.Labels) + 1)
		for _, kv := range c.StampLabels() {
			b.Add(kv[0], kv[1])
		}
		s, err := queryfed.NewSource(cc.Name, b.Labels(), *cc.Query, m, logger)
		if err != nil {
			return nil, err
		}
		sources = append(sources, s)
	}
	if cfg.Forward.Query != nil {
		// The backend holds every cluster's series, already stamped.
		s, err := queryfed.NewSource("forward-backend", labels.EmptyLabels(), *cfg.Forward.Query, m, logger)
		if err != nil {
			return nil, err
		}
		sources = append(sources, s)
	}
	f.fed = queryfed.New(local, sources)

	if f.ha, err = ha.New(cfg.HA, r); err != nil {
		return nil, err
	}
	if err := f.ha.Load(filepath.Join(dataDir, haStateFile)); err != nil {
		logger.Warn("HA elections not restored", "err", err)
	}
	if err := f.ha.OpenPins(filepath.Join(dataDir, haPinsFile)); err != nil {
		return nil, fmt.Errorf("restoring HA pins (fix or remove the file to start without them): %w", err)
	}
	return f, nil
}

// queryable is what the PromQL engine reads: the embedded store merged
// with every remote cluster.
func (f *federation) queryable() storage.SampleAndChunkQueryable { return f.fed }

// register mounts /api/v1/ha and /api/v1/sources (read, only the caller's
// clusters) and the HA pin (admin); ingest/ha serves the HA routes.
func (f *federation) register(rt *routes) {
	read := rt.on(classRead)
	api := ha.NewAPI(f.ha, f.reg, f.logger)
	read.HandleFunc("GET /api/v1/ha", api.Status)
	rt.on(classAdmin).HandleFunc("POST /api/v1/ha/{cluster}/pin", api.Pin)
	read.HandleFunc("GET /api/v1/sources", func(w http.ResponseWriter, r *http.Request) {
		scope, _ := access.ScopeFrom(r.Context())
		out := []queryfed.SourceStatus{}
		for _, s := range f.fed.Sources() {
			if st := s.Status(); scope.Allows(st.Cluster) {
				out = append(out, st)
			}
		}
		httpapi.WriteSuccess(w, out)
	})
}

// actors adds the source health probes to the run group.
func (f *federation) actors(g *run.Group) {
	if len(f.fed.Sources()) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g.Add(func() error {
		defer close(done)
		f.fed.Run(ctx)
		return nil
	}, func(error) {
		cancel()
		<-done
	})
}

// close saves the HA elections.
func (f *federation) close() {
	if err := f.ha.Save(filepath.Join(f.dataDir, haStateFile)); err != nil {
		f.logger.Error("saving HA elections", "err", err)
	}
}

// storageParts are what the rest of fleetgate reads and writes: the
// embedded TSDB, or in forward-only mode (storage.embedded: false) the
// agent WAL that the forward queues drain, with queries going to the backend.
type storageParts struct {
	store     *metrics.Store // nil in forward-only mode
	agent     *metrics.Agent // nil with an embedded TSDB
	fwd       *remotewrite.Forwarder
	sink      storage.AppendableV2
	meta      *metrics.Metadata
	local     storage.SampleAndChunkQueryable // nil in forward-only mode
	exemplars storage.ExemplarQueryable       // nil in forward-only mode
	tsdb      v1.TSDBAdminStats               // nil in forward-only mode
}

// openStorage opens the embedded TSDB (replaying its WAL) or the agent WAL,
// and starts the forward queues tailing that WAL.
func openStorage(cfg *Config, r prometheus.Registerer, logger *slog.Logger, opts ...metrics.Option) (*storageParts, error) {
	if cfg.Storage.Embedded == nil || *cfg.Storage.Embedded {
		store, err := metrics.Open(cfg.Storage, r, logger, opts...)
		if err != nil {
			return nil, err
		}
		fwd, err := remotewrite.New(cfg.Forward, cfg.Storage.Path, r, logger)
		if err != nil {
			_ = store.Close()
			return nil, err
		}
		if fwd != nil {
			store.SetWriteNotified(fwd.WriteNotified())
		}
		return &storageParts{store: store, fwd: fwd, sink: store, meta: store.Metadata(), local: store,
			exemplars: store.ExemplarQueryable(), tsdb: store}, nil
	}
	if len(cfg.Forward.Destinations) == 0 {
		return nil, errors.New("storage.embedded: false (forward-only mode) needs at least one forward.destinations entry")
	}
	if cfg.Forward.Query == nil {
		logger.Warn("forward-only mode without forward.query: queries only see the clusters' own query endpoints")
	}
	logger = logger.With("component", "forward")
	rs := remotewrite.NewStorage(cfg.Forward, cfg.Storage.Path, r, logger)
	db, err := metrics.OpenAgent(cfg.Storage.Path, cfg.Storage.MinFreeBytes, rs, r, logger)
	if err != nil {
		_ = rs.Close()
		return nil, err
	}
	fwd, err := remotewrite.NewWithStorage(cfg.Forward, rs, logger)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	db.SetWriteNotified(fwd.WriteNotified())
	return &storageParts{agent: db, fwd: fwd, sink: db, meta: metrics.NewMetadata()}, nil
}

// ready is nil when the store takes writes, else why not (for /-/ready).
func (s *storageParts) ready() error {
	if s.store != nil {
		return s.store.Ready()
	}
	return s.agent.Ready()
}

// close stops forwarding first (what is not sent stays in the WAL), then
// closes the store.
func (s *storageParts) close(logger *slog.Logger) {
	if err := s.fwd.Close(); err != nil {
		logger.Error("closing forwarder", "err", err)
	}
	var err error
	if s.store != nil {
		err = s.store.Close()
	}
	if s.agent != nil {
		err = s.agent.Close()
	}
	if err != nil {
		logger.Error("closing storage", "err", err)
	}
}
