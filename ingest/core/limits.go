package core

import (
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/fleet"
)

// Budget names the token bucket a request draws from.
type Budget int

const (
	// BudgetNone: the request draws from no bucket (traces).
	BudgetNone Budget = iota
	// BudgetSamples: samples and histograms (limits.ingestion_rate).
	BudgetSamples
	// BudgetLogBytes: log line bytes (limits.logs_rate_bytes).
	BudgetLogBytes
)

// Limiter enforces the per-cluster request limits of every receiver: the
// in-flight request slots and the token buckets. It is cheap enough to run
// before a request body is read or decoded, so a cluster at its limits costs
// little CPU. A nil *Limiter enforces nothing.
type Limiter struct {
	reg     *fleet.Registry
	refused *prometheus.CounterVec
	now     func() time.Time
}

// NewLimiter builds the limiter of reg's clusters; r may be nil.
func NewLimiter(reg *fleet.Registry, r prometheus.Registerer) (*Limiter, error) {
	l := &Limiter{reg: reg, now: time.Now,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ingest_requests_refused_total",
			Help: "Ingest requests refused whole by a per-cluster limit, by cluster and reason (inflight_limit, rate_limited, too_large).",
		}, []string{"cluster", "reason"}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{l.refused, limitsCollector{reg}} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering limit metrics: %w", err)
			}
		}
	}
	return l, nil
}

// RetryAfter is the Retry-After header value for a wait: whole seconds, at least 1.
func RetryAfter(d time.Duration) string {
	return fmt.Sprint(max(int64(math.Ceil(d.Seconds())), 1))
}

// refuse counts a refusal of n items; a request refused before its body
// is read counts as 1.
func (l *Limiter) refuse(c *fleet.Cluster, n int, e *Error) *Error {
	l.refused.WithLabelValues(c.Name, e.Reason).Inc()
	c.Rejected(e.Reason, n, e.Msg)
	return e
}

// Admit is the check before a request's body is read: it takes one of c's
// in-flight slots and refuses (429 with a retry delay) when none is free or
// when the bucket the request draws from is empty. A nil error means the
// caller must call Done(c) when the request is answered. c nil (dev mode
// without a claimed cluster) is not limited here.
func (l *Limiter) Admit(c *fleet.Cluster, b Budget) error {
	if l == nil || c == nil {
		return nil
	}
	if !c.AcquireRequest() {
		return l.refuse(c, 1, &Error{Status: http.StatusTooManyRequests, Reason: "inflight_limit", RetryAfter: time.Second,
			Msg: fmt.Sprintf("cluster %q already has %d requests in flight (limits.max_inflight_requests); retry later", c.Name, c.Limits().MaxInflightRequests)})
	}
	var (
		ok   = true
		wait time.Duration
		what string
	)
	switch b {
	case BudgetSamples:
		ok, wait = c.SampleBudget(l.now())
		what = fmt.Sprintf("ingestion rate limit of %g samples/s (limits.ingestion_rate, burst %d)", c.Limits().IngestionRate, c.Limits().IngestionBurst)
	case BudgetLogBytes:
		ok, wait = c.LogBudget(l.now())
		what = fmt.Sprintf("log ingestion limit of %d bytes/s (limits.logs_rate_bytes, burst %d)", c.Limits().LogsRateBytes, c.Limits().LogsBurstBytes)
	}
	if !ok {
		c.ReleaseRequest()
		return l.refuse(c, 1, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited", RetryAfter: wait,
			Msg: fmt.Sprintf("cluster %q is over its %s; retry after %s", c.Name, what, wait.Round(time.Millisecond))})
	}
	return nil
}

// Done gives back the slot Admit took.
func (l *Limiter) Done(c *fleet.Cluster) {
	if l == nil || c == nil {
		return
	}
	c.ReleaseRequest()
}

// TakeSamples draws n samples and histograms of a decoded request from c's
// bucket: 429 with a retry delay when they are not there yet, 413 when n is
// more than the burst (the request could never pass).
func (l *Limiter) TakeSamples(c *fleet.Cluster, n int) error {
	if l == nil || c == nil {
		return nil
	}
	ok, wait := c.TakeSamples(l.now(), n)
	if ok {
		return nil
	}
	lim := c.Limits()
	if wait == 0 {
		return l.refuse(c, n, &Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large",
			Msg: fmt.Sprintf("request carries %d samples for cluster %q, more than its limits.ingestion_burst (%d); send smaller requests", n, c.Name, lim.IngestionBurst)})
	}
	return l.refuse(c, n, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited", RetryAfter: wait,
		Msg: fmt.Sprintf("cluster %q is over its ingestion rate limit of %g samples/s (limits.ingestion_rate, burst %d); this request has %d samples; retry after %s",
			c.Name, lim.IngestionRate, lim.IngestionBurst, n, wait.Round(time.Millisecond))})
}

// TakeLogBytes is TakeSamples for log line bytes (limits.logs_rate_bytes).
func (l *Limiter) TakeLogBytes(c *fleet.Cluster, lines, bytes int) error {
	if l == nil || c == nil {
		return nil
	}
	ok, wait := c.TakeLogBytes(l.now(), bytes)
	if ok {
		return nil
	}
	lim := c.Limits()
	if wait == 0 {
		return l.refuse(c, lines, &Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large",
			Msg: fmt.Sprintf("request carries %d log bytes for cluster %q, more than its limits.logs_burst_bytes (%d); send smaller pushes", bytes, c.Name, lim.LogsBurstBytes)})
	}
	return l.refuse(c, lines, &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited", RetryAfter: wait,
		Msg: fmt.Sprintf("cluster %q is over its log ingestion limit of %d bytes/s (limits.logs_rate_bytes, burst %d); this request has %d bytes; retry after %s",
			c.Name, lim.LogsRateBytes, lim.LogsBurstBytes, bytes, wait.Round(time.Millisecond))})
}

// limitsCollector exports every cluster's effective limits.
type limitsCollector struct{ reg *fleet.Registry }

var limitDesc = prometheus.NewDesc("fleetgate_cluster_limit",
	"Effective per-cluster limit by name (the limits: keys); 0 means unlimited.", []string{"cluster", "limit"}, nil)

func (limitsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- limitDesc }

func (lc limitsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range lc.reg.Clusters() {
		for _, kv := range c.Limits().Values() {
			ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, kv.Value, c.Name, kv.Key)
		}
	}
}
