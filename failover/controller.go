package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// SignalsConfig is the `signals:` section: where decisions go.
type SignalsConfig struct {
	// ExternalURL is how receivers reach this fleetgate (links in alerts).
	ExternalURL   string               `yaml:"external_url"`
	Alertmanagers []AlertmanagerConfig `yaml:"alertmanagers"`
	// AlertmanagerResendInterval: firing alerts are re-sent this often (default 1m).
	AlertmanagerResendInterval model.Duration   `yaml:"alertmanager_resend_interval"`
	Webhooks                   []WebhookConfig  `yaml:"webhooks"`
	Kubernetes                 KubernetesConfig `yaml:"kubernetes"`
	Retry                      RetryConfig      `yaml:"retry"`
}

// RetryConfig is the outbox's retry backoff.
type RetryConfig struct {
	MinBackoff model.Duration `yaml:"min_backoff"`
	MaxBackoff model.Duration `yaml:"max_backoff"`
}

// KubernetesConfig enables the Kubernetes parts: DNSEndpoint writing and
// leader election.
type KubernetesConfig struct {
	// Kubeconfig path; empty uses the in-cluster configuration.
	Kubeconfig     string               `yaml:"kubeconfig"`
	DNSEndpoints   bool                 `yaml:"dns_endpoints"`
	LeaderElection LeaderElectionConfig `yaml:"leader_election"`
}

// Enabled reports whether fleetgate needs a Kubernetes client.
func (k KubernetesConfig) Enabled() bool { return k.DNSEndpoints || k.LeaderElection.Enabled }

// Validate names the first bad field by its path relative to the signals:
// section (webhooks[0].url, kubernetes.leader_election.namespace, ...).
func (c *SignalsConfig) Validate() error {
	if c.ExternalURL != "" {
		if u, err := url.Parse(c.ExternalURL); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("external_url: %q is not an absolute URL", c.ExternalURL)
		}
	}
	for i, am := range c.Alertmanagers {
		u, err := url.Parse(am.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("alertmanagers[%d].url: %q is not an http(s) URL", i, am.URL)
		}
		if am.Timeout < 0 {
			return fmt.Errorf("alertmanagers[%d].timeout: must not be negative", i)
		}
		if err := am.Client.Validate(); err != nil {
			return httpclient.Under(fmt.Sprintf("alertmanagers[%d]", i), err)
		}
	}
	if c.AlertmanagerResendInterval < 0 {
		return fmt.Errorf("alertmanager_resend_interval: must not be negative")
	}
	names := map[string]bool{}
	for i := range c.Webhooks {
		f := fmt.Sprintf("webhooks[%d]", i)
		if err := c.Webhooks[i].Validate(); err != nil {
			return httpclient.Under(f, err)
		}
		if names[c.Webhooks[i].Name] {
			return fmt.Errorf("%s.name: %q is used twice", f, c.Webhooks[i].Name)
		}
		names[c.Webhooks[i].Name] = true
	}
	if c.Retry.MinBackoff < 0 || c.Retry.MaxBackoff < 0 || (c.Retry.MaxBackoff != 0 && c.Retry.MaxBackoff < c.Retry.MinBackoff) {
		return fmt.Errorf("retry: min_backoff and max_backoff must be positive with min_backoff <= max_backoff")
	}
	if err := c.Kubernetes.LeaderElection.Validate(); err != nil {
		return fmt.Errorf("kubernetes.leader_election.%w", err)
	}
	return nil
}

// Controller runs failover: it feeds health evaluations to the engine,
// logs every decision durably, queues its signals in the outbox and
// delivers them while this replica leads.
type Controller struct {
	engine      *Engine
	log         *EventLog
	outbox      *Outbox
	sinks       []Sink
	am          []*AlertmanagerSink
	leader      Leader
	resend      time.Duration
	externalURL string
	logger      *slog.Logger
	now         func() time.Time

	mu        sync.Mutex // serializes decisions with their logging and queueing
	decisions *prometheus.CounterVec
	errors    prometheus.Counter
}

// ControllerOptions are a Controller's parts.
type ControllerOptions struct {
	Engine      *Engine
	Log         *EventLog
	Outbox      *Outbox
	Sinks       []Sink
	Leader      Leader
	Resend      time.Duration
	ExternalURL string
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
}

// NewController wires the parts; the engine is restored from the log.
func NewController(o ControllerOptions) (*Controller, error) {
	if o.Leader == nil {
		o.Leader = Standalone{}
	}
	if o.Resend <= 0 {
		o.Resend = time.Minute
	}
	c := &Controller{engine: o.Engine, log: o.Log, outbox: o.Outbox, sinks: o.Sinks, leader: o.Leader, resend: o.Resend,
		externalURL: o.ExternalURL, logger: o.Logger, now: time.Now,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_failover_decisions_total",
			Help: "Failover decisions by group and kind."}, []string{"group", "kind"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_failover_record_errors_total",
			Help: "Decisions that could not be logged or queued."}),
	}
	for _, s := range o.Sinks {
		if am, ok := s.(*AlertmanagerSink); ok {
			c.am = append(c.am, am)
		}
	}
	if o.Registerer != nil {
		for _, col := range []prometheus.Collector{c.decisions, c.errors} {
			if err := o.Registerer.Register(col); err != nil {
				return nil, fmt.Errorf("registering failover metrics: %w", err)
			}
		}
	}
	c.engine.Restore(c.log.Events(0, "", 0))
	// Signals written for a decision whose event never got logged (a stop
	// in between) belong to a decision that did not take effect.
	n, err := c.outbox.DropOrphans(c.log.NextID() - 1)
	if err != nil {
		return nil, fmt.Errorf("failover outbox: %w", err)
	}
	if n > 0 {
		c.logger.Warn("dropped queued signals of decisions that were never logged", "messages", n)
	}
	return c, nil
}

// OnResults is a health.Subscriber. The round is observed on a copy of the
// engine; the copy replaces the live engine only once the round's decisions
// are durable, so a decision that cannot be recorded is retried at the next
// evaluation instead of taking effect silently.
func (c *Controller) OnResults(_ context.Context, now time.Time, results []health.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.engine.Clone()
	evs := next.Observe(now, results)
	if err := c.decideLocked(next, evs); err != nil {
		c.errors.Inc()
		c.logger.Error("recording failover decision failed: it does not take effect and is retried at the next evaluation", "err", err)
	}
}

// decideLocked makes a decision take effect: its signals are written to the
// outbox durably (not yet delivered), its events are appended to the event
// log durably, then the signals are released for delivery and next replaces
// the live engine. On error nothing changed: the engine is untouched and the
// signals written are removed again.
func (c *Controller) decideLocked(next *Engine, evs []Event) error {
	if len(evs) == 0 {
		c.engine.Replace(next)
		return nil
	}
	id := c.log.NextID()
	var msgs []Message
	for i := range evs {
		evs[i].ID = id + uint64(i)
		for _, s := range c.sinks {
			ps, err := s.Payloads(evs[i])
			if err != nil {
				// A payload that cannot be built never will be: do not block
				// the decision on it.
				c.errors.Inc()
				c.logger.Error("building a signal failed; this sink gets no signal for the decision", "sink", s.Name(), "event", evs[i].ID, "err", err)
				continue
			}
			for _, p := range ps {
				msgs = append(msgs, Message{Sink: s.Name(), EventID: evs[i].ID, Created: evs[i].Time, Payload: p})
			}
		}
	}
	staged, err := c.outbox.Prepare(msgs)
	if err != nil {
		return fmt.Errorf("queueing the decision's signals: %w", err)
	}
	logged, err := c.log.Append(evs)
	if err != nil && !errors.Is(err, errCompaction) {
		return errors.Join(fmt.Errorf("logging the decision: %w", err), staged.Abort())
	}
	if err != nil {
		c.logger.Warn("the decision is logged, but compacting the event log failed", "err", err)
	}
	staged.Commit()
	c.engine.Replace(next)
	for _, ev := range logged {
		c.decisions.WithLabelValues(ev.Group, ev.Kind).Inc()
		c.logger.Info("failover decision", "id", ev.ID, "group", ev.Group, "kind", ev.Kind, "cluster", ev.Cluster, "serving", ev.Serving, "reason", ev.Reason)
	}
	return nil
}

// operator applies an operator's change on a copy of the engine and makes it
// take effect only once it is recorded; an error means nothing changed.
// actor is who asked (recorded in the event).
func (c *Controller) operator(actor string, f func(e *Engine, now time.Time) (Event, error)) (Event, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.engine.Clone()
	ev, err := f(next, c.now())
	if err != nil {
		return Event{}, err
	}
	ev.Actor = actor
	evs := []Event{ev}
	if err := c.decideLocked(next, evs); err != nil {
		c.errors.Inc()
		return Event{}, err
	}
	return evs[0], nil
}

// Freeze stops automatic decisions of a group (until may be zero: no end);
// actor is who asked (recorded in the event).
func (c *Controller) Freeze(group, actor, reason string, until time.Time) (Event, error) {
	f := &Freeze{Reason: reason}
	if !until.IsZero() {
		f.Until = &until
	}
	return c.operator(actor, func(e *Engine, now time.Time) (Event, error) { return e.SetFreeze(now, group, f) })
}

// Unfreeze resumes automatic decisions.
func (c *Controller) Unfreeze(group, actor string) (Event, error) {
	return c.operator(actor, func(e *Engine, now time.Time) (Event, error) { return e.SetFreeze(now, group, nil) })
}

// Override pins the serving clusters of a group.
func (c *Controller) Override(group, actor string, clusters []string, reason string, until time.Time) (Event, error) {
	o := &Override{Clusters: clusters, Reason: reason}
	if !until.IsZero() {
		o.Until = &until
	}
	return c.operator(actor, func(e *Engine, now time.Time) (Event, error) { return e.SetOverride(now, group, o) })
}

// ClearOverride releases an override.
func (c *Controller) ClearOverride(group, actor string) (Event, error) {
	return c.operator(actor, func(e *Engine, now time.Time) (Event, error) { return e.SetOverride(now, group, nil) })
}

// Events lists logged decisions.
func (c *Controller) Events(after uint64, group string, limit int) []Event {
	return c.log.Events(after, group, limit)
}

// Status is the live state of every group.
func (c *Controller) Status() []GroupStatus { return c.engine.Status() }

// Run delivers queued signals (one loop per sink) and re-sends firing
// alerts to Alertmanager until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	// State-publishing sinks start from the live (restored) state.
	for _, s := range c.sinks {
		sy, ok := s.(Syncer)
		if !ok || c.outbox.Pending(s.Name()) > 0 {
			continue
		}
		ps, err := sy.SyncPayloads(c.engine.Status())
		if err != nil {
			return fmt.Errorf("sink %s: %w", s.Name(), err)
		}
		for _, p := range ps {
			if err := c.outbox.Enqueue(s.Name(), 0, c.now(), p); err != nil {
				// The next decision publishes the state again.
				c.logger.Error("queueing the start-up state sync failed", "sink", s.Name(), "err", err)
				break
			}
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(c.sinks)+1)
	for _, s := range c.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.outbox.Deliver(ctx, s, c.leader); err != nil {
				errc <- fmt.Errorf("sink %s: %w", s.Name(), err)
			}
		}()
	}
	if len(c.am) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.resendLoop(ctx)
		}()
	}
	// Run until stopped, even with no sinks: returning early would end the
	// whole run group and with it fleetgate.
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	wg.Wait()
	return nil
}

func (c *Controller) resendLoop(ctx context.Context) {
	t := time.NewTicker(c.resend)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.leader.IsLeader() {
			continue
		}
		for _, am := range c.am {
			// Only once its queue is empty: a re-send must not overtake a queued resolve.
			if c.outbox.Pending(am.Name()) > 0 {
				continue
			}
			as := stateAlerts(c.engine.Status(), c.now(), c.externalURL)
			if err := am.Resend(ctx, as); err != nil {
				c.logger.Warn("re-sending firing alerts", "alertmanager", am.Name(), "err", err)
			}
		}
	}
}
