package metrics

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/agent"
	"github.com/prometheus/prometheus/tsdb/wlog"
)

// Agent is forward-only mode's storage (storage.embedded: false): Prometheus's
// agent WAL, which the forward queues drain, behind the same guard as the
// TSDB: no write is acknowledged after a WAL failure until the WAL has been
// reopened (in process, once there is free space again).
type Agent struct {
	g *guard
}

// OpenAgent opens (and replays) the agent WAL under dir/wal. rs is the
// remote storage whose queues tail it.
// r may be nil; of the options only WithFreeSpace applies.
func OpenAgent(dir string, minFreeBytes int64, rs *remote.Storage, r prometheus.Registerer, logger *slog.Logger, options ...Option) (*Agent, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if minFreeBytes < 0 {
		return nil, fmt.Errorf("storage.min_free_bytes: must not be negative, got %d", minFreeBytes)
	}
	o := buildOptions(options)
	g, err := newGuard("forward-only WAL", dir, r, logger, guardOptions{
		MinFreeBytes: uint64(minFreeBytes), CheckInterval: o.checkInterval, FreeBytes: o.freeBytes,
	})
	if err != nil {
		return nil, err
	}
	err = g.start(func(reg prometheus.Registerer) (*instance, error) {
		db, err := agent.Open(logger, reg, rs, dir, agent.DefaultOptions())
		if err != nil {
			return nil, fmt.Errorf("opening the forward-only WAL in %s: %w", dir, err)
		}
		return &instance{app: db, close: db.Close}, nil
	})
	if err != nil {
		return nil, err
	}
	return &Agent{g: g}, nil
}

// AppenderV2 implements storage.AppendableV2.
func (a *Agent) AppenderV2(ctx context.Context) storage.AppenderV2 { return a.g.appenderV2(ctx) }

// SetWriteNotified makes the WAL (also after a reopen) notify wn of writes.
func (a *Agent) SetWriteNotified(wn wlog.WriteNotified) { a.g.setWriteNotified(wn) }

// Ready is nil when the WAL takes writes, else why not.
func (a *Agent) Ready() error { return a.g.ready() }

// Run is the WAL's actor in main's run group, until ctx is done or Close:
// it checks free space and reopens the WAL after a failure once it can be
// written again (without Run it does not recover by itself).
func (a *Agent) Run(ctx context.Context) error { return a.g.run(ctx, nil) }

// Close ends Run and closes the WAL.
func (a *Agent) Close() error { return a.g.shutdown() }
