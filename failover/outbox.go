package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/internal/durable"
)

// Message is one payload waiting for delivery to one sink.
type Message struct {
	ID      uint64          `json:"id"`
	Sink    string          `json:"sink"`
	EventID uint64          `json:"eventId"`
	Created time.Time       `json:"created"`
	Payload json.RawMessage `json:"payload"`
}

// Sink delivers signals somewhere.
type Sink interface {
	// Name is unique among sinks and names the outbox queue.
	Name() string
	// Payloads turns a decision into what to deliver (none if the sink ignores it).
	Payloads(ev Event) ([]json.RawMessage, error)
	// Deliver sends one message; an error is retried, unless it wraps ErrPermanent.
	Deliver(ctx context.Context, m *Message) error
}

// Syncer is a Sink that publishes state (like DNS records): at start it is
// given the live state of every group, so it never lags a restart.
type Syncer interface {
	SyncPayloads(st []GroupStatus) ([]json.RawMessage, error)
}

// ErrPermanent marks a delivery error that retrying cannot fix (e.g. HTTP 400);
// the message is dropped and counted.
var ErrPermanent = errors.New("permanent delivery failure")

// Leader says whether this replica may emit signals.
type Leader interface {
	IsLeader() bool
}

// Standalone is the leader of a single fleetgate: always.
type Standalone struct{}

// IsLeader implements Leader.
func (Standalone) IsLeader() bool { return true }

// Outbox is a durable queue per sink: each message is a file written with
// fsync and rename before Enqueue returns, and removed only after the sink
// accepted it. Delivery is at least once, in order per sink.
type Outbox struct {
	dir    string
	logger *slog.Logger

	mu     sync.Mutex
	nextID uint64
	queues map[string][]*Message
	wake   map[string]chan struct{}

	minBackoff, maxBackoff time.Duration

	pending  *prometheus.GaugeVec
	sent     *prometheus.CounterVec
	failures *prometheus.CounterVec
	dropped  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	lastSent *prometheus.GaugeVec

	statsMu   sync.Mutex
	latencies map[string][]time.Duration

	write func(path string, b []byte) error // writeFileSync; tests inject failures
}

var msgFileRE = regexp.MustCompile(`^([0-9]{20})\.json$`)

// OpenOutbox loads what is pending under dir.
func OpenOutbox(dir string, minBackoff, maxBackoff time.Duration, reg prometheus.Registerer, logger *slog.Logger) (*Outbox, error) {
	if minBackoff <= 0 {
		minBackoff = 200 * time.Millisecond
	}
	if maxBackoff < minBackoff {
		maxBackoff = 30 * time.Second
	}
	o := &Outbox{dir: dir, logger: logger, nextID: 1, queues: map[string][]*Message{}, wake: map[string]chan struct{}{},
		minBackoff: minBackoff, maxBackoff: maxBackoff, latencies: map[string][]time.Duration{}, write: writeFileSync,
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_signal_outbox_pending",
			Help: "Signals waiting in the durable outbox."}, []string{"sink"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_signals_sent_total",
			Help: "Signals delivered."}, []string{"sink"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_signal_delivery_failures_total",
			Help: "Failed signal delivery attempts (retried)."}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_signals_dropped_total",
			Help: "Signals dropped after a permanent failure."}, []string{"sink"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetgate_signal_delivery_latency_seconds",
			Help: "From decision to accepted delivery.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"sink"}),
		lastSent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_signal_last_sent_timestamp_seconds",
			Help: "When a signal was last delivered."}, []string{"sink"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{o.pending, o.sent, o.failures, o.dropped, o.latency, o.lastSent} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering outbox metrics: %w", err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	sinks, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	for _, sd := range sinks {
		if !sd.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, sd.Name()))
		if err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
		for _, fi := range files {
			p := filepath.Join(dir, sd.Name(), fi.Name())
			if strings.HasSuffix(fi.Name(), durable.TmpSuffix) {
				_ = os.Remove(p) // never renamed: Enqueue did not return
				continue
			}
			mm := msgFileRE.FindStringSubmatch(fi.Name())
			if mm == nil {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("outbox: %w", err)
			}
			var m Message
			if err := json.Unmarshal(b, &m); err != nil {
				logger.Error("outbox: unreadable message, moved aside", "file", p, "err", err)
				_ = os.Rename(p, p+".corrupt")
				continue
			}
			o.queues[m.Sink] = append(o.queues[m.Sink], &m)
			if id, _ := strconv.ParseUint(mm[1], 10, 64); id >= o.nextID {
				o.nextID = id + 1
			}
		}
	}
	for s, q := range o.queues {
		sort.Slice(q, func(i, j int) bool { return q[i].ID < q[j].ID })
		o.pending.WithLabelValues(s).Set(float64(len(q)))
	}
	return o, nil
}

func (o *Outbox) wakeCh(sink string) chan struct{} {
	ch := o.wake[sink]
	if ch == nil {
		ch = make(chan struct{}, 1)
		o.wake[sink] = ch
	}
	return ch
}

func (o *Outbox) path(m *Message) string {
	return filepath.Join(o.dir, m.Sink, fmt.Sprintf("%020d.json", m.ID))
}

// Enqueue makes a message durable and schedules its delivery.
func (o *Outbox) Enqueue(sink string, eventID uint64, created time.Time, payload json.RawMessage) error {
	st, err := o.Prepare([]Message{{Sink: sink, EventID: eventID, Created: created, Payload: payload}})
	if err != nil {
		return err
	}
	st.Commit()
	return nil
}

// Staged are messages written durably but not yet scheduled: a decision
// commits them once its event is logged, or aborts them.
type Staged struct {
	o    *Outbox
	msgs []*Message
}

// Prepare writes the messages durably (each file written, fsynced, renamed
// into place, directory fsynced) without scheduling them. On error none of
// them is left behind.
func (o *Outbox) Prepare(msgs []Message) (*Staged, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := &Staged{o: o}
	for i := range msgs {
		m := msgs[i]
		m.ID = o.nextID + uint64(i)
		b, err := json.Marshal(&m)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("outbox: encoding: %w", err), st.removeLocked())
		}
		if err := o.write(o.path(&m), b); err != nil {
			st.msgs = append(st.msgs, &m) // its file may exist if only the directory fsync failed
			return nil, errors.Join(fmt.Errorf("outbox %s: %w", m.Sink, err), st.removeLocked())
		}
		st.msgs = append(st.msgs, &m)
	}
	o.nextID += uint64(len(msgs))
	return st, nil
}

// Commit schedules the staged messages for delivery.
func (st *Staged) Commit() {
	o := st.o
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, m := range st.msgs {
		o.queues[m.Sink] = append(o.queues[m.Sink], m)
		o.pending.WithLabelValues(m.Sink).Set(float64(len(o.queues[m.Sink])))
		select {
		case o.wakeCh(m.Sink) <- struct{}{}:
		default:
		}
	}
	st.msgs = nil
}

// Abort removes the staged messages' files.
func (st *Staged) Abort() error {
	st.o.mu.Lock()
	defer st.o.mu.Unlock()
	return st.removeLocked()
}

func (st *Staged) removeLocked() error {
	var errs []error
	dirs := map[string]bool{}
	for _, m := range st.msgs {
		p := st.o.path(m)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("outbox: removing staged message: %w", err))
		}
		dirs[filepath.Dir(p)] = true
	}
	for d := range dirs {
		if err := durable.SyncDir(d); err != nil {
			errs = append(errs, fmt.Errorf("outbox: %w", err))
		}
	}
	st.msgs = nil
	return errors.Join(errs...)
}

// DropOrphans removes queued messages of events after lastEventID: they
// were written for a decision whose event never made it into the event log
// (fleetgate stopped in between), so the decision did not take effect.
// Messages without an event (state syncs) stay.
func (o *Outbox) DropOrphans(lastEventID uint64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var orphans []*Message
	for sink, q := range o.queues {
		kept := q[:0]
		for _, m := range q {
			if m.EventID > lastEventID {
				orphans = append(orphans, m)
				continue
			}
			kept = append(kept, m)
		}
		o.queues[sink] = kept
		o.pending.WithLabelValues(sink).Set(float64(len(kept)))
	}
	st := &Staged{o: o, msgs: orphans}
	return len(orphans), st.removeLocked()
}

// writeFileSync writes a message file durably (see durable.WriteFile).
func writeFileSync(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return durable.WriteFile(p, b, 0o644)
}

// Pending returns how many messages wait for a sink.
func (o *Outbox) Pending(sink string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queues[sink])
}

func (o *Outbox) head(sink string) (*Message, chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ch := o.wakeCh(sink)
	if q := o.queues[sink]; len(q) > 0 {
		return q[0], ch
	}
	return nil, ch
}

func (o *Outbox) remove(m *Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queues[m.Sink]
	if len(q) > 0 && q[0] == m {
		o.queues[m.Sink] = q[1:]
	}
	o.pending.WithLabelValues(m.Sink).Set(float64(len(o.queues[m.Sink])))
	if err := os.Remove(o.path(m)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("outbox: removing delivered message: %w", err)
	}
	return nil
}

// MeanLatency is the mean decision-to-delivery time of the last deliveries
// to a sink (for the DR drill); ok is false without deliveries.
func (o *Outbox) MeanLatency(sink string) (time.Duration, bool) {
	o.statsMu.Lock()
	defer o.statsMu.Unlock()
	l := o.latencies[sink]
	if len(l) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	return sum / time.Duration(len(l)), true
}

// Deliver runs the delivery loop of one sink until ctx ends. Only the
// leader delivers.
func (o *Outbox) Deliver(ctx context.Context, s Sink, leader Leader) error {
	name := s.Name()
	backoff := o.minBackoff
	for {
		if !leader.IsLeader() {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		m, wake := o.head(name)
		if m == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
			case <-time.After(5 * time.Second):
			}
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.Deliver(dctx, m)
		cancel()
		if ctx.Err() != nil {
			return nil // shutting down; the message stays for the next start
		}
		switch {
		case err == nil:
			lat := time.Since(m.Created)
			o.sent.WithLabelValues(name).Inc()
			o.latency.WithLabelValues(name).Observe(lat.Seconds())
			o.lastSent.WithLabelValues(name).SetToCurrentTime()
			o.statsMu.Lock()
			l := append(o.latencies[name], lat)
			if len(l) > 20 {
				l = l[len(l)-20:]
			}
			o.latencies[name] = l
			o.statsMu.Unlock()
			o.logger.Debug("signal delivered", "sink", name, "message", m.ID, "event", m.EventID, "latency", lat)
			if err := o.remove(m); err != nil {
				return err
			}
			backoff = o.minBackoff
		case errors.Is(err, ErrPermanent):
			o.dropped.WithLabelValues(name).Inc()
			o.logger.Error("signal dropped: the receiver refused it permanently", "sink", name, "message", m.ID, "event", m.EventID, "err", err)
			if err := o.remove(m); err != nil {
				return err
			}
		default:
			o.failures.WithLabelValues(name).Inc()
			o.logger.Warn("signal delivery failed, will retry", "sink", name, "message", m.ID, "event", m.EventID, "retry_in", backoff, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, o.maxBackoff)
		}
	}
}
