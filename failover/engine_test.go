package failover

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/health"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one evaluation round: the state of each cluster ("H" healthy 100,
// "D" down 0, "G" degraded 60, "U" unknown).
type step map[string]string

func results(s step) []health.Result {
	var out []health.Result
	for c, st := range s {
		r := health.Result{Cluster: c}
		switch st {
		case "H":
			r.State, r.Score = health.Healthy, 100
		case "D":
			r.State, r.Score = health.Down, 0
		case "G":
			r.State, r.Score = health.Degraded, 60
		case "U":
			r.State = health.Unknown
		}
		out = append(out, r)
	}
	return out
}

// run feeds the timeline at 1 s per round and returns events by round index.
func run(e *Engine, timeline []step) map[int][]Event {
	out := map[int][]Event{}
	for i, s := range timeline {
		if evs := e.Observe(t0.Add(time.Duration(i)*time.Second), results(s)); len(evs) > 0 {
			out[i] = evs
		}
	}
	return out
}

func repeat(s step, n int) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func kinds(evs []Event) []string {
	var k []string
	for _, e := range evs {
		k = append(k, e.Kind)
	}
	return k
}

func apGroup() GroupConfig {
	return GroupConfig{Name: "web", Mode: ActivePassive, Clusters: []string{"eu-1"}, Standby: []string{"eu-2", "us-1"},
		FailAfter: 3, RecoverAfter: 3, Cooldown: model.Duration(10 * time.Second), HoldDown: model.Duration(5 * time.Second), MinDwell: model.Duration(5 * time.Second)}
}

func TestEngineTimelines(t *testing.T) {
	allH := step{"eu-1": "H", "eu-2": "H", "us-1": "H"}
	primaryDown := step{"eu-1": "D", "eu-2": "H", "us-1": "H"}
	allD := step{"eu-1": "D", "eu-2": "D", "us-1": "D"}

	tests := []struct {
		name     string
		group    GroupConfig
		timeline []step
		check    func(t *testing.T, evs map[int][]Event, e *Engine)
	}{
		{
			name:     "clean outage fails over after exactly N evaluations",
			group:    apGroup(),
			timeline: append(repeat(allH, 3), repeat(primaryDown, 6)...),
			check: func(t *testing.T, evs map[int][]Event, e *Engine) {
				require.Len(t, evs, 1, "one decision round")
				got := evs[3+3-1] // the third bad round
				require.Equal(t, []string{KindDrain, KindFailover}, kinds(got))
				require.Equal(t, "eu-1", got[0].Cluster)
				require.Equal(t, []string{"eu-2"}, got[1].Serving)
				require.Equal(t, []string{"eu-1"}, got[1].Drained)
				require.NotEmpty(t, got[0].Evidence[0].Signals == nil || true)
				require.Contains(t, got[0].Reason, "3 consecutive bad evaluations")
			},
		},
		{
			name:     "N-1 bad evaluations do nothing",
			group:    apGroup(),
			timeline: []step{allH, primaryDown, primaryDown, allH, primaryDown, primaryDown, allH},
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Empty(t, evs)
			},
		},
		{
			name:  "flapping cluster causes no failover and no signal storm",
			group: apGroup(),
			timeline: func() []step {
				var tl []step
				for i := 0; i < 60; i++ {
					if i%2 == 0 {
						tl = append(tl, primaryDown)
					} else {
						tl = append(tl, allH)
					}
				}
				return tl
			}(),
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Empty(t, evs)
			},
		},
		{
			name:     "recovery fails back only after the cool-down and M good evaluations",
			group:    apGroup(),
			timeline: append(append(repeat(allH, 2), repeat(primaryDown, 3)...), repeat(allH, 30)...),
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Equal(t, []string{KindDrain, KindFailover}, kinds(evs[4]))
				// good from round 5; cooldown 10s: the good streak starts at t=5s, so
				// the first round with goodFor >= 10s is round 15.
				var back int
				for i, e := range evs {
					if i > 4 {
						back = i
						require.Equal(t, []string{KindRestore, KindFailback}, kinds(e))
						require.Equal(t, []string{"eu-1"}, e[1].Serving)
					}
				}
				require.Equal(t, 15, back)
				require.Len(t, evs, 2)
			},
		},
		{
			name:     "a relapse during the cool-down restarts it",
			group:    apGroup(),
			timeline: append(append(append(repeat(primaryDown, 3), repeat(allH, 8)...), primaryDown), repeat(allH, 20)...),
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Equal(t, []string{KindDrain, KindFailover}, kinds(evs[2]))
				require.Len(t, evs, 2)
				// good again from round 12: back at 22.
				require.Equal(t, []string{KindRestore, KindFailback}, kinds(evs[22]))
			},
		},
		{
			name:     "all clusters bad drains nothing and says so once",
			group:    apGroup(),
			timeline: append(repeat(allH, 2), repeat(allD, 20)...),
			check: func(t *testing.T, evs map[int][]Event, e *Engine) {
				require.Len(t, evs, 1)
				got := evs[4]
				require.Equal(t, []string{KindAllBad}, kinds(got))
				require.Empty(t, got[0].Drained)
				require.Equal(t, []string{"eu-1"}, got[0].Serving)
				require.Contains(t, got[0].Reason, "least bad")
				require.Equal(t, []string{"eu-1"}, e.Status()[0].Serving)
			},
		},
		{
			name:  "active-active drains the bad cluster, keeps the last one",
			group: GroupConfig{Name: "api", Mode: ActiveActive, Clusters: []string{"eu-1", "eu-2", "us-1"}, FailAfter: 2},
			timeline: append(append(repeat(allH, 1), repeat(step{"eu-1": "D", "eu-2": "H", "us-1": "H"}, 2)...),
				repeat(step{"eu-1": "D", "eu-2": "D", "us-1": "D"}, 5)...),
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Equal(t, []string{KindDrain, KindFailover}, kinds(evs[2]))
				require.Equal(t, []string{"eu-2", "us-1"}, evs[2][1].Serving)
				require.Equal(t, []string{KindAllBad}, kinds(evs[4]))
				require.Equal(t, []string{"eu-2", "us-1"}, evs[4][0].Serving)
				require.Len(t, evs, 2)
			},
		},
		{
			name:  "hybrid: standby takes over only when every active cluster is drained",
			group: GroupConfig{Name: "h", Mode: Hybrid, Clusters: []string{"eu-1", "eu-2"}, Standby: []string{"us-1"}, FailAfter: 2},
			timeline: append(repeat(step{"eu-1": "D", "eu-2": "H", "us-1": "H"}, 2),
				repeat(step{"eu-1": "D", "eu-2": "D", "us-1": "H"}, 2)...),
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Equal(t, []string{"eu-2"}, evs[1][1].Serving)
				require.Equal(t, []string{KindDrain, KindFailover}, kinds(evs[3]))
				require.Equal(t, []string{"us-1"}, evs[3][1].Serving)
			},
		},
		{
			name:     "unknown standby is not a failover target",
			group:    apGroup(),
			timeline: repeat(step{"eu-1": "D", "eu-2": "U", "us-1": "H"}, 3),
			check: func(t *testing.T, evs map[int][]Event, _ *Engine) {
				require.Equal(t, []string{"us-1"}, evs[2][1].Serving)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Groups: []GroupConfig{tc.group}}
			require.NoError(t, cfg.Validate())
			e := NewEngine(cfg)
			tc.check(t, run(e, tc.timeline), e)
		})
	}
}

func TestEngineWeightsHysteresis(t *testing.T) {
	e := NewEngine(Config{Groups: []GroupConfig{{Name: "api", Mode: ActiveActive, Clusters: []string{"a", "b"}, MinDwell: model.Duration(time.Second)}}})
	obs := func(i int, a, b float64) []Event {
		return e.Observe(t0.Add(time.Duration(i)*time.Second), []health.Result{
			{Cluster: "a", State: health.Healthy, Score: a}, {Cluster: "b", State: health.Healthy, Score: b}})
	}
	require.Empty(t, obs(1, 100, 100))
	require.Empty(t, obs(2, 95, 100), "a 5-point move is inside the weight step")
	evs := obs(3, 85, 100)
	require.Equal(t, []string{KindWeights}, kinds(evs))
	require.Equal(t, map[string]int{"a": 85, "b": 100}, evs[0].Weights)
	require.Empty(t, obs(4, 80, 100))
}

func TestFreezeAndOverride(t *testing.T) {
	e := NewEngine(Config{Groups: []GroupConfig{apGroup()}})
	_, err := e.SetFreeze(t0, "nope", &Freeze{Reason: "x"})
	require.ErrorIs(t, err, ErrNotFound)
	ev, err := e.SetFreeze(t0, "web", &Freeze{Reason: "maintenance"})
	require.NoError(t, err)
	require.Equal(t, KindFreeze, ev.Kind)
	evs := run(e, repeat(step{"eu-1": "D", "eu-2": "H", "us-1": "H"}, 5))
	require.Empty(t, evs, "frozen groups decide nothing")
	_, err = e.SetFreeze(t0, "web", nil)
	require.NoError(t, err)
	got := e.Observe(t0.Add(10*time.Second), results(step{"eu-1": "D", "eu-2": "H", "us-1": "H"}))
	require.Equal(t, []string{KindDrain, KindFailover}, kinds(got), "streaks kept counting while frozen")

	_, err = e.SetOverride(t0, "web", &Override{Clusters: []string{"mars"}})
	require.ErrorIs(t, err, ErrBadRequest)
	_, err = e.SetOverride(t0, "web", &Override{})
	require.ErrorIs(t, err, ErrBadRequest)
	ev, err = e.SetOverride(t0, "web", &Override{Clusters: []string{"us-1"}, Reason: "drill"})
	require.NoError(t, err)
	require.Equal(t, []string{"us-1"}, ev.Serving)
}

func TestRestoreFromLog(t *testing.T) {
	cfg := Config{Groups: []GroupConfig{apGroup()}}
	e := NewEngine(cfg)
	evs := run(e, repeat(step{"eu-1": "D", "eu-2": "H", "us-1": "H"}, 3))
	var all []Event
	for _, v := range evs {
		all = append(all, v...)
	}
	e2 := NewEngine(cfg)
	e2.Restore(all)
	st := e2.Status()[0]
	require.Equal(t, []string{"eu-2"}, st.Serving)
	require.Equal(t, []string{"eu-1"}, st.Drained)
	require.Empty(t, e2.Observe(t0.Add(5*time.Second), results(step{"eu-1": "D", "eu-2": "H", "us-1": "H"})), "no repeated failover after restart")
}

func TestValidate(t *testing.T) {
	known := func(s string) bool { return s != "mars" }
	for _, tc := range []struct {
		g    GroupConfig
		want string
	}{
		{GroupConfig{Name: "", Mode: ActiveActive, Clusters: []string{"a"}}, "groups[0].name"},
		{GroupConfig{Name: "g", Mode: "chaos", Clusters: []string{"a"}}, ".mode"},
		{GroupConfig{Name: "g", Mode: ActiveActive}, ".clusters"},
		{GroupConfig{Name: "g", Mode: ActiveActive, Clusters: []string{"mars"}}, "unknown cluster \"mars\""},
		{GroupConfig{Name: "g", Mode: ActiveActive, Clusters: []string{"a", "a"}}, "listed twice"},
		{GroupConfig{Name: "g", Mode: ActiveActive, Clusters: []string{"a"}, Standby: []string{"b"}}, ".standby"},
		{GroupConfig{Name: "g", Mode: ActivePassive, Clusters: []string{"a"}, FailBelow: 90}, ".recover_above"},
		{GroupConfig{Name: "g", Mode: ActivePassive, Clusters: []string{"a"}, DNS: &DNSConfig{Namespace: "x", Hostname: "a.example.com"}}, "dns.targets"},
	} {
		c := Config{Groups: []GroupConfig{tc.g}}
		err := c.Validate()
		if err == nil {
			err = c.CheckClusters(known)
		}
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.want)
	}
}
