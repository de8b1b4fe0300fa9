// Package loki forwards identity-stamped log streams to a Loki push
// endpoint (snappy-compressed protobuf, github.com/grafana/loki/pkg/push)
// through a durable on-disk queue.
package loki

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"

	"github.com/fleetgate/fleetgate/forward/queue"
)

// Config of one Loki destination; URL is the push endpoint, e.g.
// http://loki:3100/loki/api/v1/push.
type Config = queue.HTTPConfig

// Forwarder implements logtrace.LogsSink; Run and Close come from its queue.
type Forwarder struct {
	*queue.Queue
}

// New opens the destination's queue in dir.
func New(cfg Config, dir string, m *queue.Metrics, logger *slog.Logger) (*Forwarder, error) {
	q, err := queue.OpenHTTP("loki", cfg, map[string]string{"Content-Type": "application/x-protobuf"}, dir, m, logger)
	if err != nil {
		return nil, err
	}
	return &Forwarder{Queue: q}, nil
}

// PushLogs queues the streams durably as one snappy-compressed push request.
func (f *Forwarder) PushLogs(_ context.Context, streams []push.Stream) error {
	req := push.PushRequest{Streams: streams}
	raw, err := req.Marshal()
	if err != nil {
		return fmt.Errorf("encoding Loki push request: %w", err)
	}
	return f.Enqueue(snappy.Encode(nil, raw))
}
