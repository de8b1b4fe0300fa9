package health

import (
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// Config is the `health:` section of the fleetgate config.
type Config struct {
	// Interval between full evaluations of every cluster (default 5s).
	Interval model.Duration `yaml:"interval"`
	// SuspectInterval is how often freshness is checked, and how often a
	// cluster that is not healthy is re-evaluated (default 1s). It makes
	// detection fast without querying a healthy fleet every second.
	SuspectInterval model.Duration `yaml:"suspect_interval"`
	// QueryURL, when set, runs the PromQL signals on a remote
	// Prometheus-compatible API (Prometheus, Thanos, Mimir, VictoriaMetrics)
	// instead of the embedded engine.
	QueryURL string `yaml:"query_url"`
	// QueryTimeout bounds one signal's query (default 2s).
	QueryTimeout model.Duration `yaml:"query_timeout"`
	// HealthyAbove: a score at or above it is healthy (default 80).
	HealthyAbove float64 `yaml:"healthy_above"`
	// DownBelow: a score below it is down (default 40).
	DownBelow float64 `yaml:"down_below"`
	// Freshness configures the built-in telemetry freshness signal.
	Freshness FreshnessConfig `yaml:"freshness"`
	// DisableDefaultSignals drops the built-in PromQL signals (up ratio,
	// node readiness, API-server errors, crash-looping pods).
	DisableDefaultSignals bool `yaml:"disable_default_signals"`
	// Signals are added to (or, with the same name, replace) the defaults.
	Signals []SignalConfig `yaml:"signals"`
}

// FreshnessConfig tunes the cadence-aware staleness detection.
type FreshnessConfig struct {
	// Weight of the freshness signal in the score (default 4).
	Weight float64 `yaml:"weight"`
	// CadenceFactor: a cluster is stale when nothing arrived for this many
	// times its observed write cadence (the longest recent gap; default 3).
	CadenceFactor float64 `yaml:"cadence_factor"`
	// MinStaleAfter is the floor of the stale threshold (default 3s).
	MinStaleAfter model.Duration `yaml:"min_stale_after"`
	// MaxStaleAfter caps it, and is used before a cadence is known (default 2m).
	MaxStaleAfter model.Duration `yaml:"max_stale_after"`
}

// SignalConfig is one PromQL signal. `$cluster` in Expr is replaced by the
// cluster's name. The expression should return one sample; with several,
// the worst is used.
type SignalConfig struct {
	Name string `yaml:"name"`
	Expr string `yaml:"expr"`
	// Good and Bad are the thresholds: at Good the signal scores 1, at Bad 0,
	// linear in between. Good < Bad means lower is better.
	Good   float64 `yaml:"good"`
	Bad    float64 `yaml:"bad"`
	Weight float64 `yaml:"weight"`
	// Critical makes the cluster down whenever this signal is at or past Bad.
	Critical bool `yaml:"critical"`
}

// FreshnessSignal is the name of the built-in freshness signal.
const FreshnessSignal = "freshness"

// DefaultSignals are the built-in PromQL signals (up values outside [0, 1],
// NaN and ±Inf among them, are not targets and are left out). They use the metric names
// of Prometheus (`up`), kube-state-metrics and the API server.
var DefaultSignals = []SignalConfig{
	{Name: "up_ratio", Expr: `avg(up{cluster="$cluster"} >= 0 <= 1)`, Good: 0.95, Bad: 0.5, Weight: 2},
	{Name: "node_readiness", Expr: `sum(kube_node_status_condition{cluster="$cluster",condition="Ready",status="true"}) / count(kube_node_info{cluster="$cluster"})`, Good: 1, Bad: 0.5, Weight: 2},
	{Name: "apiserver_error_ratio", Expr: `sum(rate(apiserver_request_total{cluster="$cluster",code=~"5.."}[5m])) / sum(rate(apiserver_request_total{cluster="$cluster"}[5m]))`, Good: 0.01, Bad: 0.1, Weight: 1},
	{Name: "crashlooping_pods", Expr: `count(kube_pod_container_status_waiting_reason{cluster="$cluster",reason="CrashLoopBackOff"} == 1) or on() (0 * group(kube_pod_info{cluster="$cluster"}))`, Good: 0, Bad: 5, Weight: 1},
}

var signalNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config { return Config{}.WithDefaults() }

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.Interval == 0 {
		c.Interval = model.Duration(5 * time.Second)
	}
	if c.SuspectInterval == 0 {
		c.SuspectInterval = model.Duration(time.Second)
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = model.Duration(2 * time.Second)
	}
	if c.HealthyAbove == 0 {
		c.HealthyAbove = 80
	}
	if c.DownBelow == 0 {
		c.DownBelow = 40
	}
	f := &c.Freshness
	if f.Weight == 0 {
		f.Weight = 4
	}
	if f.CadenceFactor == 0 {
		f.CadenceFactor = 3
	}
	if f.MinStaleAfter == 0 {
		f.MinStaleAfter = model.Duration(3 * time.Second)
	}
	if f.MaxStaleAfter == 0 {
		f.MaxStaleAfter = model.Duration(2 * time.Minute)
	}
	return c
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	d := c.WithDefaults()
	switch {
	case d.Interval < 0:
		return fmt.Errorf("interval: must be positive, got %s", c.Interval)
	case d.SuspectInterval < 0 || d.SuspectInterval > d.Interval:
		return fmt.Errorf("suspect_interval: must be positive and at most interval (%s), got %s", d.Interval, c.SuspectInterval)
	case d.QueryTimeout < 0:
		return fmt.Errorf("query_timeout: must be positive, got %s", c.QueryTimeout)
	case d.HealthyAbove <= 0 || d.HealthyAbove > 100:
		return fmt.Errorf("healthy_above: must be in (0, 100], got %g", c.HealthyAbove)
	case d.DownBelow <= 0 || d.DownBelow >= d.HealthyAbove:
		return fmt.Errorf("down_below: must be in (0, healthy_above=%g), got %g", d.HealthyAbove, c.DownBelow)
	case d.Freshness.Weight < 0:
		return fmt.Errorf("freshness.weight: must not be negative, got %g", c.Freshness.Weight)
	case d.Freshness.CadenceFactor < 1:
		return fmt.Errorf("freshness.cadence_factor: must be at least 1, got %g", c.Freshness.CadenceFactor)
	case d.Freshness.MinStaleAfter < 0:
		return fmt.Errorf("freshness.min_stale_after: must be positive, got %s", c.Freshness.MinStaleAfter)
	case d.Freshness.MaxStaleAfter < d.Freshness.MinStaleAfter:
		return fmt.Errorf("freshness.max_stale_after: must be at least min_stale_after (%s), got %s", d.Freshness.MinStaleAfter, c.Freshness.MaxStaleAfter)
	}
	if c.QueryURL != "" {
		if u, err := url.Parse(c.QueryURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("query_url: %q is not an http(s) URL", c.QueryURL)
		}
	}
	seen := map[string]bool{FreshnessSignal: true}
	for i, s := range c.Signals {
		field := fmt.Sprintf("signals[%d]", i)
		if !signalNameRE.MatchString(s.Name) {
			return fmt.Errorf("%s.name: %q is not a valid signal name (letters, digits, _)", field, s.Name)
		}
		if seen[s.Name] {
			return fmt.Errorf("%s.name: %q is used twice (or is the built-in %q)", field, s.Name, FreshnessSignal)
		}
		seen[s.Name] = true
		if s.Expr == "" {
			return fmt.Errorf("%s (%s).expr: empty", field, s.Name)
		}
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(expand(s.Expr, "x")); err != nil {
			return fmt.Errorf("%s (%s).expr: %w", field, s.Name, err)
		}
		if s.Good == s.Bad {
			return fmt.Errorf("%s (%s).good/bad: thresholds must differ, both are %g", field, s.Name, s.Good)
		}
		if s.Weight < 0 {
			return fmt.Errorf("%s (%s).weight: must not be negative, got %g", field, s.Name, s.Weight)
		}
	}
	return nil
}

// signals returns the effective PromQL signals: defaults, replaced or
// extended by the configured ones.
func (c Config) signals() []SignalConfig {
	var out []SignalConfig
	if !c.DisableDefaultSignals {
		out = append(out, DefaultSignals...)
	}
	for _, s := range c.Signals {
		if s.Weight == 0 {
			s.Weight = 1
		}
		replaced := false
		for i := range out {
			if out[i].Name == s.Name {
				out[i], replaced = s, true
			}
		}
		if !replaced {
			out = append(out, s)
		}
	}
	return out
}
