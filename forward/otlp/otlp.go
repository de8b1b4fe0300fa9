// Package otlp forwards identity-stamped traces to an OTLP/HTTP endpoint
// (Tempo, Jaeger, another collector) as protobuf through a durable on-disk
// queue.
package otlp

import (
	"context"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/fleetgate/fleetgate/forward/queue"
)

// Config of one OTLP destination; URL is the traces endpoint, e.g.
// http://tempo:4318/v1/traces.
type Config = queue.HTTPConfig

// Forwarder implements signals.TracesSink.
type Forwarder struct {
	q *queue.Queue
}

// New opens the destination's queue in dir.
func New(cfg Config, dir string, m *queue.Metrics, logger *slog.Logger) (*Forwarder, error) {
	s, err := queue.NewHTTPSender(cfg, map[string]string{"Content-Type": "application/x-protobuf"})
	if err != nil {
		return nil, err
	}
	q, err := queue.Open("otlp/"+cfg.Name, dir, cfg.Options(), func(ctx context.Context, rec []byte) error {
		return s.Post(ctx, rec)
	}, m, logger)
	if err != nil {
		return nil, err
	}
	return &Forwarder{q: q}, nil
}

// PushTraces queues the traces durably as one OTLP export request.
func (f *Forwarder) PushTraces(_ context.Context, td ptrace.Traces) error {
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return fmt.Errorf("encoding OTLP traces: %w", err)
	}
	return f.q.Enqueue(b)
}

// Run delivers until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error { return f.q.Run(ctx) }

// Close closes the queue.
func (f *Forwarder) Close() error { return f.q.Close() }
