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
	"github.com/prometheus/prometheus/tsdb/wlog"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/forward/remotewrite"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/query"
)

const haStateFile = "fleetgate-ha.json"

// federation is the scale-out part of fleetgate: remote clusters as query
// sources, the HA tracker, and forwarding to remote-write backends.
type federation struct {
	fed     *query.Federation
	ha      *pipeline.HATracker
	fwd     *remotewrite.Forwarder
	reg     *fleet.Registry
	dataDir string
	logger  *slog.Logger
}

// setupFederation builds the query sources of the clusters that name a
// query endpoint, the HA tracker, and the forwarder tailing the WAL of the
// embedded TSDB in dataDir. local is the embedded store (nil in forward-only
// mode, where forward.query is the only query source).
func setupFederation(cfg *Config, reg *fleet.Registry, local storage.SampleAndChunkQueryable, dataDir string, r prometheus.Registerer, logger *slog.Logger) (*federation, error) {
	f := &federation{reg: reg, dataDir: dataDir, logger: logger}
	m, err := query.NewSourceMetrics(r)
	if err != nil {
		return nil, err
	}
	var sources []*query.Source
	for _, cc := range cfg.Clusters {
		if cc.Query == nil {
			continue
		}
		c := reg.Get(cc.Name)
		b := labels.NewScratchBuilder(len(c.Labels) + 1)
		for _, kv := range c.StampLabels() {
			b.Add(kv[0], kv[1])
		}
		s, err := query.NewSource(cc.Name, b.Labels(), *cc.Query, m, logger)
		if err != nil {
			return nil, err
		}
		sources = append(sources, s)
	}
	if cfg.Forward.Query != nil {
		// The backend holds every cluster's series, already stamped.
		s, err := query.NewSource("forward-backend", labels.EmptyLabels(), *cfg.Forward.Query, m, logger)
		if err != nil {
			return nil, err
		}
		sources = append(sources, s)
	}
	f.fed = query.NewFederation(local, sources)

	if f.ha, err = pipeline.NewHATracker(cfg.HA, r); err != nil {
		return nil, err
	}
	if err := f.ha.Load(filepath.Join(dataDir, haStateFile)); err != nil {
		logger.Warn("HA elections not restored", "err", err)
	}
	return f, nil
}

// startForwarding starts the remote-write queues tailing dataDir/wal; wal
// (the TSDB) wakes them on every write.
func (f *federation) startForwarding(cfg remotewrite.Config, wal interface{ SetWriteNotified(wlog.WriteNotified) }, r prometheus.Registerer) error {
	fwd, err := remotewrite.New(cfg, f.dataDir, r, f.logger)
	if err != nil {
		return err
	}
	if fwd != nil {
		wal.SetWriteNotified(fwd.WriteNotified())
	}
	f.fwd = fwd
	return nil
}

// queryable is what the PromQL engine reads: the embedded store merged
// with every remote cluster.
func (f *federation) queryable() storage.SampleAndChunkQueryable { return f.fed }

// register mounts /api/v1/ha and /api/v1/sources.
func (f *federation) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/ha", func(w http.ResponseWriter, _ *http.Request) {
		query.WriteSuccess(w, map[string]any{"enabled": f.ha != nil, "groups": f.ha.Status()})
	})
	mux.HandleFunc("POST /api/v1/ha/{cluster}/pin", f.pin)
	mux.HandleFunc("GET /api/v1/sources", func(w http.ResponseWriter, _ *http.Request) {
		out := []query.SourceStatus{}
		for _, s := range f.fed.Sources() {
			out = append(out, s.Status())
		}
		query.WriteSuccess(w, out)
	})
}

// pin handles POST /api/v1/ha/{cluster}/pin with form fields replica
// (empty with unpin=true to unpin) and group.
func (f *federation) pin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("parsing form: %v", err))
		return
	}
	cluster := r.PathValue("cluster")
	if f.reg.Get(cluster) == nil {
		query.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("cluster %q is not configured", cluster))
		return
	}
	replica := r.Form.Get("replica")
	unpin := r.Form.Get("unpin")
	switch {
	case unpin == "true" && replica != "":
		query.WriteError(w, http.StatusBadRequest, "bad_data", "set either replica (to pin) or unpin=true, not both")
		return
	case unpin == "true":
	case unpin != "" && unpin != "false":
		query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("unpin: %q is not true or false", unpin))
		return
	case replica == "":
		query.WriteError(w, http.StatusBadRequest, "bad_data", "replica: must be set (or unpin=true to unpin)")
		return
	}
	if err := f.ha.Pin(cluster, r.Form.Get("group"), replica); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, pipeline.ErrBadPin) {
			status = http.StatusBadRequest
		}
		query.WriteError(w, status, "bad_data", err.Error())
		return
	}
	f.logger.Info("HA replica pinned", "cluster", cluster, "group", r.Form.Get("group"), "replica", replica, "unpin", unpin == "true")
	query.WriteSuccess(w, f.ha.Status())
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

// close stops forwarding (flushing what it can; the rest stays in the WAL)
// and saves the HA elections.
func (f *federation) close() {
	if err := f.fwd.Close(); err != nil {
		f.logger.Error("closing forwarder", "err", err)
	}
	if err := f.ha.Save(filepath.Join(f.dataDir, haStateFile)); err != nil {
		f.logger.Error("saving HA elections", "err", err)
	}
}
