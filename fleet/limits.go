package fleet

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limits bound what one cluster may send. They are the `limits:` section
// (the defaults of every cluster) and, field by field, a cluster's own
// `limits:` block. 0 means unlimited.
type Limits struct {
	// MaxSeries bounds the cluster's active series in the embedded TSDB head
	// (as Mimir's max_global_series_per_user): a sample that would create a
	// series over it is refused (400); existing series keep being accepted.
	MaxSeries int `yaml:"max_series" json:"max_series"`
	// IngestionRate is samples plus histograms per second, IngestionBurst the
	// token bucket's size (default 2 × rate).
	IngestionRate  float64 `yaml:"ingestion_rate" json:"ingestion_rate"`
	IngestionBurst int     `yaml:"ingestion_burst" json:"ingestion_burst"`
	// MaxInflightRequests bounds the cluster's concurrent ingest requests
	// over every protocol.
	MaxInflightRequests int `yaml:"max_inflight_requests" json:"max_inflight_requests"`
	// Label limits of series and log streams.
	MaxLabelsPerSeries  int `yaml:"max_labels_per_series" json:"max_labels_per_series"`
	MaxLabelNameLength  int `yaml:"max_label_name_length" json:"max_label_name_length"`
	MaxLabelValueLength int `yaml:"max_label_value_length" json:"max_label_value_length"`
	// OTLP attribute counts, checked before translation: per resource, and
	// per scope, data point, log record and span.
	MaxOTLPResourceAttributes int `yaml:"max_otlp_resource_attributes" json:"max_otlp_resource_attributes"`
	MaxOTLPAttributes         int `yaml:"max_otlp_attributes" json:"max_otlp_attributes"`
	// LogsRateBytes is log line bytes per second, LogsBurstBytes its burst
	// (default 2 × rate).
	LogsRateBytes  int `yaml:"logs_rate_bytes" json:"logs_rate_bytes"`
	LogsBurstBytes int `yaml:"logs_burst_bytes" json:"logs_burst_bytes"`
}

// DefaultLimits are the limits of a cluster when the config names none.
func DefaultLimits() Limits {
	return Limits{
		MaxLabelsPerSeries:        64,
		MaxLabelNameLength:        1024,
		MaxLabelValueLength:       4096,
		MaxOTLPResourceAttributes: 128,
		MaxOTLPAttributes:         128,
	}
}

// LimitValue is one limit: its YAML key and value.
type LimitValue struct {
	Key   string
	Value float64
}

// Values are every limit, in field order (0: unlimited).
func (l *Limits) Values() []LimitValue {
	return []LimitValue{
		{"max_series", float64(l.MaxSeries)},
		{"ingestion_rate", l.IngestionRate},
		{"ingestion_burst", float64(l.IngestionBurst)},
		{"max_inflight_requests", float64(l.MaxInflightRequests)},
		{"max_labels_per_series", float64(l.MaxLabelsPerSeries)},
		{"max_label_name_length", float64(l.MaxLabelNameLength)},
		{"max_label_value_length", float64(l.MaxLabelValueLength)},
		{"max_otlp_resource_attributes", float64(l.MaxOTLPResourceAttributes)},
		{"max_otlp_attributes", float64(l.MaxOTLPAttributes)},
		{"logs_rate_bytes", float64(l.LogsRateBytes)},
		{"logs_burst_bytes", float64(l.LogsBurstBytes)},
	}
}

// Validate names the first bad field in field order, by its key relative to
// the limits block (max_series, ...).
func (l *Limits) Validate() error {
	for _, f := range l.Values() {
		if f.Value < 0 || math.IsNaN(f.Value) || math.IsInf(f.Value, 0) {
			return fmt.Errorf("%s: must be 0 (unlimited) or positive, got %v", f.Key, f.Value)
		}
	}
	if l.IngestionRate == 0 && l.IngestionBurst > 0 {
		return errors.New("ingestion_burst: set without ingestion_rate")
	}
	if l.LogsRateBytes == 0 && l.LogsBurstBytes > 0 {
		return errors.New("logs_burst_bytes: set without logs_rate_bytes")
	}
	return nil
}

// withBursts fills the bursts left 0 with twice their rate.
func (l Limits) withBursts() Limits {
	if l.IngestionRate > 0 && l.IngestionBurst == 0 {
		l.IngestionBurst = int(math.Ceil(2 * l.IngestionRate))
	}
	if l.LogsRateBytes > 0 && l.LogsBurstBytes == 0 {
		l.LogsBurstBytes = 2 * l.LogsRateBytes
	}
	return l
}

// LimitOverrides are a cluster's own limits: a field left out keeps the
// value of the `limits:` section.
type LimitOverrides struct {
	MaxSeries                 *int     `yaml:"max_series"`
	IngestionRate             *float64 `yaml:"ingestion_rate"`
	IngestionBurst            *int     `yaml:"ingestion_burst"`
	MaxInflightRequests       *int     `yaml:"max_inflight_requests"`
	MaxLabelsPerSeries        *int     `yaml:"max_labels_per_series"`
	MaxLabelNameLength        *int     `yaml:"max_label_name_length"`
	MaxLabelValueLength       *int     `yaml:"max_label_value_length"`
	MaxOTLPResourceAttributes *int     `yaml:"max_otlp_resource_attributes"`
	MaxOTLPAttributes         *int     `yaml:"max_otlp_attributes"`
	LogsRateBytes             *int     `yaml:"logs_rate_bytes"`
	LogsBurstBytes            *int     `yaml:"logs_burst_bytes"`
}

// Apply returns d with the fields o sets replaced.
func (o *LimitOverrides) Apply(d Limits) Limits {
	if o == nil {
		return d
	}
	setInt := func(dst *int, src *int) {
		if src != nil {
			*dst = *src
		}
	}
	setInt(&d.MaxSeries, o.MaxSeries)
	if o.IngestionRate != nil {
		d.IngestionRate = *o.IngestionRate
		if o.IngestionBurst == nil {
			d.IngestionBurst = 0 // the default burst follows the cluster's own rate
		}
	}
	setInt(&d.IngestionBurst, o.IngestionBurst)
	setInt(&d.MaxInflightRequests, o.MaxInflightRequests)
	setInt(&d.MaxLabelsPerSeries, o.MaxLabelsPerSeries)
	setInt(&d.MaxLabelNameLength, o.MaxLabelNameLength)
	setInt(&d.MaxLabelValueLength, o.MaxLabelValueLength)
	setInt(&d.MaxOTLPResourceAttributes, o.MaxOTLPResourceAttributes)
	setInt(&d.MaxOTLPAttributes, o.MaxOTLPAttributes)
	if o.LogsRateBytes != nil {
		d.LogsRateBytes = *o.LogsRateBytes
		if o.LogsBurstBytes == nil {
			d.LogsBurstBytes = 0
		}
	}
	setInt(&d.LogsBurstBytes, o.LogsBurstBytes)
	return d
}

// limitState is what enforcing a cluster's limits needs at run time. The
// limits themselves are immutable; the counters are atomics and the token
// buckets lock only themselves, so clusters never contend with each other.
type limitState struct {
	limits   Limits // bursts filled in
	inflight atomic.Int64
	samples  *rate.Limiter // nil: unlimited
	logBytes *rate.Limiter // nil: unlimited
	// The size of the cluster's last request drawing from each bucket:
	// senders send batches of about the same size, so a request is refused
	// before it is decoded unless the bucket holds that much.
	lastSamples, lastLogBytes atomic.Int64
}

func newLimitState(l Limits) *limitState {
	l = l.withBursts()
	s := &limitState{limits: l}
	if l.IngestionRate > 0 {
		s.samples = rate.NewLimiter(rate.Limit(l.IngestionRate), l.IngestionBurst)
	}
	if l.LogsRateBytes > 0 {
		s.logBytes = rate.NewLimiter(rate.Limit(l.LogsRateBytes), l.LogsBurstBytes)
	}
	return s
}

// Limits are the cluster's effective limits (bursts filled in).
func (c *Cluster) Limits() *Limits { return &c.lim.limits }

// AcquireRequest takes one of the cluster's in-flight request slots. It
// returns false, taking nothing, when all max_inflight_requests are taken;
// otherwise the caller must call ReleaseRequest when the request is answered.
func (c *Cluster) AcquireRequest() bool {
	n := c.lim.inflight.Add(1)
	if max := c.lim.limits.MaxInflightRequests; max > 0 && n > int64(max) {
		c.lim.inflight.Add(-1)
		return false
	}
	return true
}

// ReleaseRequest gives back a slot taken by AcquireRequest.
func (c *Cluster) ReleaseRequest() { c.lim.inflight.Add(-1) }

// InflightRequests is the number of the cluster's requests being served.
func (c *Cluster) InflightRequests() int64 { return c.lim.inflight.Load() }

// SampleBudget tells, before a request is decoded, whether the cluster's
// sample bucket holds as many tokens as its last request took (at least
// one, at most the burst); if not, how long until it does. It takes nothing.
func (c *Cluster) SampleBudget(now time.Time) (bool, time.Duration) {
	return hasTokens(c.lim.samples, now, c.lim.lastSamples.Load())
}

// TakeSamples takes n tokens from the cluster's sample bucket. ok is false
// when they are not there at now: then wait says when they will be (0 when
// n is more than the burst, so never), and nothing is taken.
func (c *Cluster) TakeSamples(now time.Time, n int) (ok bool, wait time.Duration) {
	return take(c.lim.samples, &c.lim.lastSamples, now, n)
}

// LogBudget is SampleBudget for the log bytes bucket.
func (c *Cluster) LogBudget(now time.Time) (bool, time.Duration) {
	return hasTokens(c.lim.logBytes, now, c.lim.lastLogBytes.Load())
}

// TakeLogBytes is TakeSamples for the log bytes bucket.
func (c *Cluster) TakeLogBytes(now time.Time, n int) (ok bool, wait time.Duration) {
	return take(c.lim.logBytes, &c.lim.lastLogBytes, now, n)
}

func hasTokens(l *rate.Limiter, now time.Time, want int64) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	need := float64(min(max(want, 1), int64(l.Burst())))
	tokens := l.TokensAt(now)
	if tokens >= need {
		return true, 0
	}
	return false, time.Duration((need - tokens) / float64(l.Limit()) * float64(time.Second))
}

func take(l *rate.Limiter, last *atomic.Int64, now time.Time, n int) (bool, time.Duration) {
	if l == nil || n <= 0 {
		return true, 0
	}
	last.Store(int64(n))
	if n > l.Burst() {
		return false, 0
	}
	if l.AllowN(now, n) {
		return true, 0
	}
	missing := float64(n) - l.TokensAt(now)
	return false, max(time.Duration(missing/float64(l.Limit())*float64(time.Second)), time.Millisecond)
}
