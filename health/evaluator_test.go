package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
)

// fakeQuerier answers by expression substring; it stands in for the
// PromQL backend only (the engine adapter is tested in engine_test.go).
type fakeQuerier map[string]*float64

func (f fakeQuerier) Instant(_ context.Context, expr string, _ time.Time) (model.Vector, error) {
	for k, v := range f {
		if strings.Contains(expr, k) {
			if v == nil {
				return nil, errors.New("boom")
			}
			return model.Vector{{Value: model.SampleValue(*v)}}, nil
		}
	}
	return nil, nil
}

func (f fakeQuerier) Range(context.Context, string, time.Time, time.Time, time.Duration) (model.Matrix, error) {
	return nil, nil
}

func fptr(f float64) *float64 { return &f }

func newFleet(t *testing.T, names ...string) *fleet.Registry {
	var cc []fleet.ClusterConfig
	for i, n := range names {
		p := filepath.Join(t.TempDir(), n)
		require.NoError(t, os.WriteFile(p, []byte("token-"+string(rune('a'+i))), 0o600))
		cc = append(cc, fleet.ClusterConfig{Name: n, Credentials: fleet.Credentials{BearerTokenFile: p}})
	}
	r, err := fleet.NewRegistry(fleet.Config{Clusters: cc})
	require.NoError(t, err)
	return r
}

var logger = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestScoreAndStates(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := newFleet(t, "eu-1")
	c := reg.Get("eu-1")
	q := fakeQuerier{"up{": fptr(1), "kube_node_status_condition": fptr(1), "apiserver_request_total": fptr(0.001), "CrashLoopBackOff": fptr(0)}
	preg := prometheus.NewRegistry()
	e, err := NewEvaluator(Config{}, q, reg, preg, logger)
	require.NoError(t, err)

	// Never written: unknown.
	rs := e.Step(context.Background(), t0)
	require.Len(t, rs, 1)
	require.Equal(t, Unknown, rs[0].State)

	// Never written for longer than max_stale_after (2m): down, not unknown forever.
	other := newFleet(t, "dead")
	e2, err := NewEvaluator(Config{DisableDefaultSignals: true}, q, other, nil, logger)
	require.NoError(t, err)
	require.Equal(t, Unknown, e2.Step(context.Background(), t0)[0].State)
	rs2 := e2.Step(context.Background(), t0.Add(2*time.Minute+time.Second))
	require.Len(t, rs2, 1)
	require.Equal(t, Down, rs2[0].State)

	// A 1 s sender: healthy, stale threshold at the 3 s floor.
	for i := 0; i < 10; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		c.Written(now, 1, 1, 0, 0)
		e.Step(context.Background(), now.Add(100*time.Millisecond))
	}
	require.Equal(t, 3*time.Second, e.StaleAfter("eu-1"))
	r, _ := e.Result("eu-1")
	require.Equal(t, Healthy, r.State, r.Reason)
	require.Equal(t, 100.0, r.Score)
	require.Len(t, r.Signals, 5)
	var sum float64
	for _, s := range r.Signals {
		sum += s.Contribution
	}
	require.InDelta(t, 100, sum, 0.05, "contributions add up to the score")
	require.Equal(t, 100.0, testutil.ToFloat64(e.score.WithLabelValues("eu-1")))

	// It stops writing: the next tick after 3 s reports it down, evaluated at once.
	last := t0.Add(9 * time.Second)
	rs = e.Step(context.Background(), last.Add(2500*time.Millisecond))
	require.Len(t, rs, 1, "freshness turned to warning: evaluated at once")
	require.NotEqual(t, Down, rs[0].State)
	rs = e.Step(context.Background(), last.Add(3250*time.Millisecond))
	require.Len(t, rs, 1)
	require.Equal(t, Down, rs[0].State)
	require.Contains(t, rs[0].Reason, "critical signal freshness")
	// Suspect clusters are re-evaluated every SuspectInterval (1 s).
	require.Empty(t, e.Step(context.Background(), last.Add(3500*time.Millisecond)))
	require.Len(t, e.Step(context.Background(), last.Add(4250*time.Millisecond)), 1)
}

func TestBurstySenderIsNotFalselyDown(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := newFleet(t, "eu-1")
	c := reg.Get("eu-1")
	e, err := NewEvaluator(Config{DisableDefaultSignals: true}, fakeQuerier{}, reg, nil, logger)
	require.NoError(t, err)
	// Writes every 15 s (default remote-write batching of a 15 s scrape).
	for i := 0; i < 6; i++ {
		now := t0.Add(time.Duration(i*15) * time.Second)
		c.Written(now, 1, 1, 0, 0)
		for tick := time.Duration(0); tick < 15*time.Second; tick += 250 * time.Millisecond {
			for _, r := range e.Step(context.Background(), now.Add(tick)) {
				require.NotEqual(t, Down, r.State, "at %s: %s", now.Add(tick).Sub(t0), r.Reason)
			}
		}
	}
	require.Equal(t, 45*time.Second, e.StaleAfter("eu-1"))
}

func TestSignalThresholdsAndErrors(t *testing.T) {
	require.Equal(t, 1.0, subScore(0.99, 0.95, 0.5))
	require.Equal(t, 0.0, subScore(0.4, 0.95, 0.5))
	require.InDelta(t, 0.5, subScore(0.725, 0.95, 0.5), 1e-9)
	require.Equal(t, 1.0, subScore(0, 0.01, 0.1))
	require.Equal(t, 0.0, subScore(0.2, 0.01, 0.1))

	t0 := time.Now()
	reg := newFleet(t, "eu-1")
	reg.Get("eu-1").Written(t0, 1, 1, 0, 0)
	q := fakeQuerier{"up{": fptr(0.2), "kube_node_status_condition": nil}
	e, err := NewEvaluator(Config{Signals: []SignalConfig{{Name: "custom", Expr: `vector(1)`, Good: 1, Bad: 0, Critical: true}}}, q, reg, nil, logger)
	require.NoError(t, err)
	r := e.Step(context.Background(), t0)[0]
	up, _ := r.Signal("up_ratio")
	require.Equal(t, StatusBad, up.Status)
	nr, _ := r.Signal("node_readiness")
	require.Equal(t, StatusError, nr.Status)
	require.Equal(t, "boom", nr.Error)
	custom, _ := r.Signal("custom")
	require.Equal(t, StatusNoData, custom.Status)
	// freshness 4*1 + up 2*0 over weight 6.
	require.InDelta(t, 66.67, r.Score, 0.01)
	require.Equal(t, Degraded, r.State)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Interval: model.Duration(time.Second), SuspectInterval: model.Duration(2 * time.Second)}, "suspect_interval"},
		{Config{HealthyAbove: 120}, "healthy_above"},
		{Config{DownBelow: 90}, "down_below"},
		{Config{Freshness: FreshnessConfig{CadenceFactor: 0.5}}, "freshness.cadence_factor"},
		{Config{Signals: []SignalConfig{{Name: "bad name", Expr: "up", Good: 1}}}, "signals[0].name"},
		{Config{Signals: []SignalConfig{{Name: "x", Expr: "sum(", Good: 1}}}, "signals[0] (x).expr"},
		{Config{Signals: []SignalConfig{{Name: "x", Expr: "up", Good: 1, Bad: 1}}}, "good/bad"},
		{Config{Signals: []SignalConfig{{Name: "freshness", Expr: "up", Good: 1}}}, "used twice"},
		{Config{QueryURL: "ftp://x"}, "query_url"},
	} {
		err := tc.cfg.Validate()
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.want)
	}
	require.NoError(t, (&Config{}).Validate())
}

// While fleetgate itself cannot take writes (its TSDB refuses them after a
// full disk), no cluster is judged and subscribers hear nothing; afterwards a
// cluster's freshness counts from the end of the impairment, so it is not
// declared down for the writes fleetgate refused.
func TestNoVerdictWhileFleetgateCannotTakeWrites(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := newFleet(t, "eu-1")
	c := reg.Get("eu-1")
	e, err := NewEvaluator(Config{DisableDefaultSignals: true}, fakeQuerier{}, reg, nil, logger)
	require.NoError(t, err)
	var impaired error
	e.SetSelfCheck(func() error { return impaired })
	heard := 0
	e.Subscribe(func(context.Context, time.Time, []Result) { heard++ })
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for i := 0; i < 8; i++ { // a sender writing every 15 s
		c.Written(at(time.Duration(i)*15*time.Second), 1, 1, 0, 0)
		e.Step(context.Background(), at(time.Duration(i)*15*time.Second))
	}
	r, ok := e.Result("eu-1")
	require.True(t, ok)
	require.Equal(t, Healthy, r.State)
	before := heard

	// The disk fills at 2m: for ten minutes every write is refused.
	impaired = errors.New("TSDB WAL failed")
	for d := 2 * time.Minute; d < 12*time.Minute; d += 5 * time.Second {
		require.Empty(t, e.Step(context.Background(), at(d)), "no cluster judged while fleetgate refuses writes")
	}
	require.Equal(t, before, heard, "no subscriber called: no failover, no alert")
	r, _ = e.Result("eu-1")
	require.Equal(t, Healthy, r.State, "the last verdict stands")

	// Space is back at 12m; the sender's retries land a few seconds later.
	impaired = nil
	for d := 12 * time.Minute; d < 12*time.Minute+20*time.Second; d += 5 * time.Second {
		for _, r := range e.Step(context.Background(), at(d)) {
			require.NotEqual(t, Down, r.State, "at %s: %s", d, r.Reason)
		}
	}
	c.Written(at(12*time.Minute+20*time.Second), 1, 1, 0, 0)
	e.Step(context.Background(), at(12*time.Minute+20*time.Second))
	r, _ = e.Result("eu-1")
	require.Equal(t, Healthy, r.State)

	// A cluster that really stops after the impairment is still found out.
	for d := 12*time.Minute + 25*time.Second; d < 16*time.Minute; d += 5 * time.Second {
		e.Step(context.Background(), at(d))
	}
	r, _ = e.Result("eu-1")
	require.Equal(t, Down, r.State, r.Reason)
}
