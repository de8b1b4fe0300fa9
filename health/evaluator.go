package health

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/fleet"
)

// State is a cluster's health state.
type State string

// The health states.
const (
	Healthy  State = "healthy"
	Degraded State = "degraded"
	Down     State = "down"
	Unknown  State = "unknown"
)

// Signal statuses.
const (
	StatusOK      = "ok"
	StatusWarning = "warning"
	StatusBad     = "bad"
	StatusNoData  = "no_data"
	StatusError   = "error"
)

// SignalResult is one signal of one evaluation: the evidence behind a score.
type SignalResult struct {
	Name     string   `json:"name"`
	Expr     string   `json:"expr,omitempty"`
	Value    *float64 `json:"value"`
	Good     float64  `json:"good"`
	Bad      float64  `json:"bad"`
	Weight   float64  `json:"weight"`
	Critical bool     `json:"critical"`
	// Score is the signal's own score, 0 (at or past Bad) to 1 (at or better than Good).
	Score *float64 `json:"score"`
	// Contribution is the points this signal adds to the 0–100 cluster score.
	Contribution float64 `json:"contribution"`
	Status       string  `json:"status"`
	Error        string  `json:"error,omitempty"`
}

// Result is one cluster's evaluation.
type Result struct {
	Cluster     string         `json:"cluster"`
	State       State          `json:"state"`
	Score       float64        `json:"score"`
	Reason      string         `json:"reason"`
	EvaluatedAt time.Time      `json:"evaluatedAt"`
	Signals     []SignalResult `json:"signals"`
}

// Signal returns the named signal of the result, if present.
func (r Result) Signal(name string) (SignalResult, bool) {
	for _, s := range r.Signals {
		if s.Name == name {
			return s, true
		}
	}
	return SignalResult{}, false
}

// Fleet is what health needs of the cluster registry.
type Fleet interface {
	Clusters() []*fleet.Cluster
}

// Subscriber receives every evaluation round (only the clusters evaluated in it).
type Subscriber func(ctx context.Context, now time.Time, results []Result)

// Evaluator scores clusters periodically. Healthy clusters are evaluated
// every Interval; a cluster that is not healthy, or whose telemetry
// freshness changes status, is evaluated every SuspectInterval (and at once
// when it goes stale), so an outage is detected within seconds.
type Evaluator struct {
	cfg     Config
	signals []SignalConfig
	q       Querier
	fleet   Fleet
	logger  *slog.Logger
	now     func() time.Time
	started time.Time
	stepped bool

	// selfCheck, when set, says whether fleetgate itself can take writes
	// (its stores); while it cannot, clusters are not evaluated (see Step).
	selfCheck  func() error
	paused     bool
	impairedAt time.Time // the last step at which selfCheck failed

	mu       sync.RWMutex
	results  map[string]Result
	cadences map[string]*cadence
	next     map[string]time.Time
	subs     []Subscriber

	score       *prometheus.GaugeVec
	state       *prometheus.GaugeVec
	signalValue *prometheus.GaugeVec
	age         *prometheus.GaugeVec
	staleAfter  *prometheus.GaugeVec
	evals       prometheus.Counter
	queryErrors *prometheus.CounterVec
	duration    prometheus.Histogram
	pausedG     prometheus.Gauge
}

// SetSelfCheck makes the evaluator ask check before each step whether
// fleetgate itself can take writes (e.g. its TSDB is not latched after a full
// disk). While check fails no cluster is evaluated and subscribers are not
// called: every cluster's writes are being refused by fleetgate, not missing
// from the cluster, so nothing about the clusters can be concluded and no
// failover or alert must follow. Afterwards freshness counts from the end of
// the impairment, so a cluster is never blamed for the time fleetgate could
// not take its writes. Call it before Run.
func (e *Evaluator) SetSelfCheck(check func() error) { e.selfCheck = check }

// NewEvaluator builds an evaluator from a validated config.
func NewEvaluator(cfg Config, q Querier, f Fleet, reg prometheus.Registerer, logger *slog.Logger) (*Evaluator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	e := &Evaluator{
		cfg: cfg, signals: cfg.signals(), q: q, fleet: f, logger: logger, now: time.Now, started: time.Now(),
		results: map[string]Result{}, cadences: map[string]*cadence{}, next: map[string]time.Time{},
		score: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_cluster_health_score",
			Help: "Health score of the cluster, 0 (down) to 100 (healthy)."}, []string{"cluster"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_cluster_health_state",
			Help: "1 for the cluster's current health state, 0 for the others."}, []string{"cluster", "state"}),
		signalValue: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_cluster_health_signal_value",
			Help: "Last value of each health signal (NaN without data)."}, []string{"cluster", "signal"}),
		age: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_cluster_telemetry_age_seconds",
			Help: "Seconds since the cluster's last accepted write."}, []string{"cluster"}),
		staleAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetgate_cluster_telemetry_stale_after_seconds",
			Help: "Cadence-aware threshold after which the cluster's telemetry is stale."}, []string{"cluster"}),
		evals: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetgate_health_evaluations_total",
			Help: "Cluster health evaluations."}),
		queryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetgate_health_signal_errors_total",
			Help: "Health signal queries that failed."}, []string{"signal"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fleetgate_health_evaluation_duration_seconds",
			Help: "Time to evaluate one cluster.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
		pausedG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetgate_health_evaluation_paused",
			Help: "1 while cluster health is not evaluated because fleetgate itself cannot take writes (e.g. a full disk)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{e.score, e.state, e.signalValue, e.age, e.staleAfter, e.evals, e.queryErrors, e.duration, e.pausedG} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering health metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Config returns the effective configuration (defaults filled).
func (e *Evaluator) Config() Config { return e.cfg }

// Subscribe adds a receiver of evaluation rounds. Call before Run.
func (e *Evaluator) Subscribe(s Subscriber) {
	e.mu.Lock()
	e.subs = append(e.subs, s)
	e.mu.Unlock()
}

// Result returns the last evaluation of a cluster.
func (e *Evaluator) Result(cluster string) (Result, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.results[cluster]
	return r, ok
}

// Results returns the last evaluation of every cluster, by name.
func (e *Evaluator) Results() []Result {
	e.mu.RLock()
	out := make([]Result, 0, len(e.results))
	for _, r := range e.results {
		out = append(out, r)
	}
	e.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

// StaleAfter is the current cadence-aware stale threshold of a cluster.
func (e *Evaluator) StaleAfter(cluster string) time.Duration {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.staleAfterLocked(cluster)
}

func (e *Evaluator) staleAfterLocked(cluster string) time.Duration {
	f := e.cfg.Freshness
	c := e.cadences[cluster]
	if c == nil || c.n == 0 {
		return time.Duration(f.MaxStaleAfter)
	}
	d := time.Duration(float64(c.maxGap()) * f.CadenceFactor)
	return min(max(d, time.Duration(f.MinStaleAfter)), time.Duration(f.MaxStaleAfter))
}

// tick is how often freshness is observed: fine enough to measure a 1 s
// write cadence and to notice staleness within a fraction of a second.
func (e *Evaluator) tick() time.Duration {
	return min(250*time.Millisecond, time.Duration(e.cfg.SuspectInterval)/4)
}

// Run evaluates until ctx is cancelled.
func (e *Evaluator) Run(ctx context.Context) error {
	t := time.NewTicker(e.tick())
	defer t.Stop()
	for {
		e.Step(ctx, e.now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step observes write cadences and evaluates the clusters that are due at now.
// Run calls it on every tick; tests call it with a scripted clock (the
// first call sets the start of the never-written grace period).
func (e *Evaluator) Step(ctx context.Context, now time.Time) []Result {
	e.mu.Lock()
	if !e.stepped {
		e.started, e.stepped = now, true
	}
	e.mu.Unlock()
	if e.selfCheck != nil {
		err := e.selfCheck()
		e.mu.Lock()
		switch {
		case err != nil:
			e.impairedAt = now
			if !e.paused {
				e.paused = true
				e.pausedG.Set(1)
				e.logger.Warn("health evaluation paused: fleetgate itself cannot take writes, so clusters are not judged by them", "err", err)
			}
		case e.paused:
			e.paused = false
			e.pausedG.Set(0)
			e.logger.Info("health evaluation resumed: fleetgate takes writes again; freshness counts from now")
		}
		paused := e.paused
		e.mu.Unlock()
		if paused {
			return nil
		}
	}
	clusters := e.fleet.Clusters()
	var due []*fleet.Cluster
	e.mu.Lock()
	for _, c := range clusters {
		cd := e.cadences[c.Name]
		if cd == nil {
			cd = &cadence{}
			e.cadences[c.Name] = cd
		}
		cd.observe(c.LastWrite())
		last, seen := e.results[c.Name]
		fresh := e.freshnessLocked(c, now)
		prev, _ := last.Signal(FreshnessSignal)
		if !seen || !now.Before(e.next[c.Name]) || fresh.Status != prev.Status {
			due = append(due, c)
		}
	}
	e.mu.Unlock()
	if len(due) == 0 {
		return nil
	}
	out := make([]Result, 0, len(due))
	for _, c := range due {
		out = append(out, e.evaluate(ctx, c, now))
	}
	e.mu.RLock()
	subs := e.subs
	e.mu.RUnlock()
	for _, s := range subs {
		s(ctx, now, out)
	}
	return out
}

// freshnessLocked builds the freshness signal of a cluster.
func (e *Evaluator) freshnessLocked(c *fleet.Cluster, now time.Time) SignalResult {
	stale := e.staleAfterLocked(c.Name)
	s := SignalResult{Name: FreshnessSignal, Good: (stale * 2 / 3).Seconds(), Bad: stale.Seconds(),
		Weight: e.cfg.Freshness.Weight, Critical: true}
	lw := c.LastWrite()
	if lw.IsZero() {
		// Nothing since fleetgate started: unknown for a grace period of
		// max_stale_after, then down (a cluster that died while fleetgate
		// was restarting must not stay "unknown" forever).
		if now.Sub(e.started) < time.Duration(e.cfg.Freshness.MaxStaleAfter) {
			s.Status = StatusNoData
			return s
		}
		lw = e.started
	}
	if e.impairedAt.After(lw) {
		lw = e.impairedAt // fleetgate refused writes until then
	}
	age := max(now.Sub(lw).Seconds(), 0)
	s.Value = &age
	score := subScore(age, s.Good, s.Bad)
	s.Score = &score
	s.Status = statusOf(score)
	return s
}

// evaluate scores one cluster at now.
func (e *Evaluator) evaluate(ctx context.Context, c *fleet.Cluster, now time.Time) Result {
	start := time.Now()
	e.mu.RLock()
	fresh := e.freshnessLocked(c, now)
	e.mu.RUnlock()
	sigs := make([]SignalResult, 0, len(e.signals)+1)
	sigs = append(sigs, fresh)
	for _, sc := range e.signals {
		sigs = append(sigs, e.evalSignal(ctx, sc, c.Name, now))
	}
	r := score(c.Name, now, sigs, e.cfg.HealthyAbove, e.cfg.DownBelow)

	next := time.Duration(e.cfg.Interval)
	if r.State == Degraded || r.State == Down || fresh.Status == StatusWarning || fresh.Status == StatusBad {
		next = time.Duration(e.cfg.SuspectInterval)
	}
	e.mu.Lock()
	prev, had := e.results[c.Name]
	e.results[c.Name] = r
	e.next[c.Name] = now.Add(next)
	stale := e.staleAfterLocked(c.Name)
	e.mu.Unlock()

	e.evals.Inc()
	e.duration.Observe(time.Since(start).Seconds())
	e.score.WithLabelValues(c.Name).Set(r.Score)
	for _, st := range []State{Healthy, Degraded, Down, Unknown} {
		v := 0.0
		if st == r.State {
			v = 1
		}
		e.state.WithLabelValues(c.Name, string(st)).Set(v)
	}
	for _, s := range r.Signals {
		v := math.NaN()
		if s.Value != nil {
			v = *s.Value
		}
		e.signalValue.WithLabelValues(c.Name, s.Name).Set(v)
	}
	if fresh.Value != nil {
		e.age.WithLabelValues(c.Name).Set(*fresh.Value)
	}
	e.staleAfter.WithLabelValues(c.Name).Set(stale.Seconds())
	if !had || prev.State != r.State {
		e.logger.Info("cluster health changed", "cluster", c.Name, "from", prev.State, "to", r.State, "score", r.Score, "reason", r.Reason)
	}
	return r
}

func (e *Evaluator) evalSignal(ctx context.Context, sc SignalConfig, cluster string, now time.Time) SignalResult {
	s := SignalResult{Name: sc.Name, Expr: expand(sc.Expr, cluster), Good: sc.Good, Bad: sc.Bad, Weight: sc.Weight, Critical: sc.Critical}
	qctx, cancel := context.WithTimeout(ctx, time.Duration(e.cfg.QueryTimeout))
	defer cancel()
	vec, err := e.q.Instant(qctx, s.Expr, now)
	if err != nil {
		e.queryErrors.WithLabelValues(sc.Name).Inc()
		s.Status, s.Error = StatusError, err.Error()
		return s
	}
	var (
		worst   *float64
		ignored []string
	)
	for _, smp := range vec {
		v := float64(smp.Value)
		// NaN and ±Inf are no measurement (a sender writing up=+Inf, a
		// division by zero): they neither score nor poison the average.
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if len(ignored) < 3 {
				ignored = append(ignored, fmt.Sprintf("%v", v))
			}
			continue
		}
		if worst == nil || subScore(v, sc.Good, sc.Bad) < subScore(*worst, sc.Good, sc.Bad) {
			worst = &v
		}
	}
	if worst == nil {
		s.Status = StatusNoData
		if len(ignored) > 0 {
			s.Error = fmt.Sprintf("ignored non-finite values (%s): no data", strings.Join(ignored, ", "))
		}
		return s
	}
	s.Value = worst
	sub := subScore(*worst, sc.Good, sc.Bad)
	s.Score = &sub
	s.Status = statusOf(sub)
	return s
}

// score combines signals into a result. Signals without data do not count;
// a critical signal at or past its bad threshold makes the cluster down.
func score(cluster string, now time.Time, sigs []SignalResult, healthyAbove, downBelow float64) Result {
	r := Result{Cluster: cluster, EvaluatedAt: now, Signals: sigs}
	var total, sum float64
	for _, s := range sigs {
		if s.Score != nil {
			total += s.Weight
			sum += s.Weight * *s.Score
		}
	}
	var bad, nodata []string
	for i := range sigs {
		s := &sigs[i]
		if s.Score != nil && total > 0 {
			s.Contribution = round2(100 * s.Weight * *s.Score / total)
		}
		switch s.Status {
		case StatusBad:
			bad = append(bad, fmt.Sprintf("%s=%s (bad at %g)", s.Name, fmtValue(s.Value), s.Bad))
		case StatusNoData, StatusError:
			nodata = append(nodata, s.Name)
		}
	}
	fresh := sigs[0]
	switch {
	case fresh.Name == FreshnessSignal && fresh.Status == StatusNoData:
		r.State, r.Reason = Unknown, "no telemetry received from the cluster since fleetgate started"
		return r
	case total == 0:
		r.State, r.Reason = Unknown, "no signal has data: "+strings.Join(nodata, ", ")
		return r
	}
	r.Score = round2(100 * sum / total)
	for _, s := range sigs {
		if s.Critical && s.Status == StatusBad {
			r.State = Down
			r.Reason = fmt.Sprintf("critical signal %s=%s is past its bad threshold %g", s.Name, fmtValue(s.Value), s.Bad)
			return r
		}
	}
	switch {
	case r.Score >= healthyAbove:
		r.State = Healthy
		r.Reason = fmt.Sprintf("score %g >= %g", r.Score, healthyAbove)
	case r.Score >= downBelow:
		r.State = Degraded
		r.Reason = fmt.Sprintf("score %g below %g", r.Score, healthyAbove)
	default:
		r.State = Down
		r.Reason = fmt.Sprintf("score %g below %g", r.Score, downBelow)
	}
	if len(bad) > 0 {
		r.Reason += "; bad: " + strings.Join(bad, ", ")
	}
	return r
}

// subScore maps v to [0,1]: 1 at or better than good, 0 at or past bad.
func subScore(v, good, bad float64) float64 {
	if good < bad { // lower is better
		switch {
		case v <= good:
			return 1
		case v >= bad:
			return 0
		}
	} else {
		switch {
		case v >= good:
			return 1
		case v <= bad:
			return 0
		}
	}
	return (bad - v) / (bad - good)
}

func statusOf(score float64) string {
	switch {
	case score >= 1:
		return StatusOK
	case score <= 0:
		return StatusBad
	}
	return StatusWarning
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

func fmtValue(v *float64) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("%.4g", *v)
}

// expand substitutes the cluster name in an expression.
func expand(expr, cluster string) string { return strings.ReplaceAll(expr, "$cluster", cluster) }

// cadence remembers the gaps between a cluster's recent writes.
type cadence struct {
	last time.Time
	gaps [32]time.Duration
	n, i int
}

func (c *cadence) observe(lw time.Time) {
	if lw.IsZero() || !lw.After(c.last) {
		return
	}
	if !c.last.IsZero() {
		c.gaps[c.i] = lw.Sub(c.last)
		c.i = (c.i + 1) % len(c.gaps)
		c.n = min(c.n+1, len(c.gaps))
	}
	c.last = lw
}

// maxGap is the longest recent gap: a bursty sender is judged by its
// longest pause, not its average.
func (c *cadence) maxGap() time.Duration {
	var m time.Duration
	for i := 0; i < c.n; i++ {
		m = max(m, c.gaps[i])
	}
	return m
}
