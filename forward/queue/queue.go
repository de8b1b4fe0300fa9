// Package queue delivers records from a durable on-disk queue to one
// destination: records are fsynced before Enqueue returns, sent in order,
// retried with exponential backoff while the destination fails transiently,
// and deleted only once delivered (or refused for good). A restart resumes
// with the first undelivered record.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/store/seglog"
)

// Options of a queue.
type Options struct {
	// MaxBytes bounds the queue on disk; when full the oldest records are
	// dropped (counted in fleetgate_forward_dropped_total). Default 1 GiB.
	MaxBytes int64
	// MinBackoff and MaxBackoff bound the retry delay (defaults 100ms, 30s).
	MinBackoff, MaxBackoff time.Duration
}

// Send delivers one record. A *PermanentError means the destination refused
// the record for good (it is dropped); any other error is retried.
type Send func(ctx context.Context, rec []byte) error

// PermanentError marks a refusal that retrying will not fix (e.g. HTTP 400).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Metrics are shared by all queues of a process; build once with NewMetrics.
type Metrics struct {
	sent, failed, dropped, retries *prometheus.CounterVec
	pending                        *prometheus.GaugeVec
	lastSuccess                    *prometheus.GaugeVec
}

// NewMetrics registers the forwarder metrics on r (may be nil).
func NewMetrics(r prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_forward_sent_total",
			Help: "Requests delivered to a forward destination."}, []string{"destination"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_forward_failed_total",
			Help: "Failed delivery attempts to a forward destination (retried)."}, []string{"destination"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_forward_dropped_total",
			Help: "Requests dropped: refused for good by the destination, or queue segments deleted when the queue was full."}, []string{"destination", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_forward_retries_total",
			Help: "Retries of a forward destination."}, []string{"destination"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_forward_pending_bytes",
			Help: "Bytes queued on disk and not yet delivered."}, []string{"destination"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_forward_last_success_timestamp_seconds",
			Help: "Time of the last successful delivery."}, []string{"destination"}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.sent, m.failed, m.dropped, m.retries, m.pending, m.lastSuccess} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering forward metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Queue is one destination's queue and delivery loop.
type Queue struct {
	name   string
	q      *seglog.Queue
	send   Send
	opts   Options
	m      *Metrics
	logger *slog.Logger
	// reported is how many dropped segments the metric counts so far.
	reported int
}

// Open opens (or creates) the queue of destination name in dir.
func Open(name, dir string, opts Options, send Send, m *Metrics, logger *slog.Logger) (*Queue, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	q, err := seglog.OpenQueue(dir, seglog.Options{MaxBytes: opts.MaxBytes, SegmentBytes: min(opts.MaxBytes/8, 64<<20)})
	if err != nil {
		return nil, fmt.Errorf("forward queue %s: %w", name, err)
	}
	if m == nil {
		if m, err = NewMetrics(nil); err != nil {
			return nil, err
		}
	}
	fq := &Queue{name: name, q: q, send: send, opts: opts, m: m, logger: logger}
	m.pending.WithLabelValues(name).Set(float64(q.Pending()))
	return fq, nil
}

// Enqueue adds a record durably.
func (fq *Queue) Enqueue(rec []byte) error {
	if err := fq.q.Append(seglog.Record{Data: rec}); err != nil {
		return fmt.Errorf("forward queue %s: %w", fq.name, err)
	}
	fq.m.pending.WithLabelValues(fq.name).Set(float64(fq.q.Pending()))
	return nil
}

// Pending is the number of undelivered bytes.
func (fq *Queue) Pending() int64 { return fq.q.Pending() }

// Run delivers records until ctx ends.
func (fq *Queue) Run(ctx context.Context) error {
	for {
		rec, pos, err := fq.q.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("forward queue %s: reading: %w", fq.name, err)
		}
		// Counted from Open, not from Run: segments dropped while nothing
		// delivered yet (records enqueued before Run started) count too.
		if d := fq.q.DroppedSegments(); d > fq.reported {
			fq.m.dropped.WithLabelValues(fq.name, "queue_full").Add(float64(d - fq.reported))
			fq.logger.Warn("forward queue full: oldest undelivered data dropped", "destination", fq.name, "segments", d-fq.reported)
			fq.reported = d
		}
		backoff := fq.opts.MinBackoff
		for attempt := 0; ; attempt++ {
			err := fq.send(ctx, rec)
			if err == nil {
				fq.m.sent.WithLabelValues(fq.name).Inc()
				fq.m.lastSuccess.WithLabelValues(fq.name).SetToCurrentTime()
				break
			}
			var pe *PermanentError
			if errors.As(err, &pe) {
				fq.m.dropped.WithLabelValues(fq.name, "refused").Inc()
				fq.logger.Error("forward destination refused data for good; dropped", "destination", fq.name, "err", err)
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			fq.m.failed.WithLabelValues(fq.name).Inc()
			if attempt == 0 || attempt%20 == 0 {
				fq.logger.Warn("forward destination failed; retrying", "destination", fq.name, "attempt", attempt+1, "err", err)
			}
			fq.m.retries.WithLabelValues(fq.name).Inc()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, fq.opts.MaxBackoff)
		}
		if err := fq.q.Ack(pos); err != nil {
			// Delivery goes on; after a restart the records since the last
			// persisted cursor are sent again (at least once).
			fq.m.failed.WithLabelValues(fq.name).Inc()
			fq.logger.Warn("forward queue: persisting the delivery cursor failed", "destination", fq.name, "err", err)
		}
		fq.m.pending.WithLabelValues(fq.name).Set(float64(fq.q.Pending()))
	}
}

// Close closes the queue files.
func (fq *Queue) Close() error { return fq.q.Close() }
