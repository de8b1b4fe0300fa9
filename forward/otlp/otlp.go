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

// Forwarder implements logtrace.TracesSink; Run and Close come from its queue.
type Forwarder struct {
	*queue.Queue
}

// New opens the destination's queue in dir.
func New(cfg Config, dir string, m *queue.Metrics, logger *slog.Logger) (*Forwarder, error) {
	q, err := queue.OpenHTTP("otlp", cfg, map[string]string{"Content-Type": "application/x-protobuf"}, dir, m, logger)
	if err != nil {
		return nil, err
	}
	return &Forwarder{Queue: q}, nil
}

// PushTraces queues the traces durably as one OTLP export request.
func (f *Forwarder) PushTraces(_ context.Context, td ptrace.Traces) error {
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return fmt.Errorf("encoding OTLP traces: %w", err)
	}
	return f.Enqueue(b)
}
