package health

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/stretchr/testify/require"
)

// A signal whose query yields NaN or ±Inf has no data (with a reason): it
// never scores, never makes a critical signal bad, and the result stays
// JSON-encodable.
func TestNonFiniteSignalValuesAreNoData(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		v    float64
	}{
		{"+Inf", math.Inf(1)},
		{"-Inf", math.Inf(-1)},
		{"NaN", math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFleet(t, "eu-1")
			c := reg.Get("eu-1")
			q := fakeQuerier{"up{": fptr(tc.v), "kube_node_status_condition": fptr(1), "apiserver_request_total": fptr(0.001), "CrashLoopBackOff": fptr(0)}
			e, err := NewEvaluator(Config{Signals: []SignalConfig{{Name: "up_ratio", Expr: `avg(up{cluster="$cluster"})`, Good: 0.95, Bad: 0.5, Weight: 2, Critical: true}}}, q, reg, nil, logger)
			require.NoError(t, err)
			c.Written(t0, 1, 1, 0, 0)
			r := e.Step(context.Background(), t0)[0]
			up, ok := r.Signal("up_ratio")
			require.True(t, ok)
			require.Equal(t, StatusNoData, up.Status)
			require.Nil(t, up.Value)
			require.Nil(t, up.Score)
			require.Contains(t, up.Error, "ignored non-finite values")
			require.Equal(t, Healthy, r.State, r.Reason)
			require.Equal(t, 100.0, r.Score)
			_, err = json.Marshal(r)
			require.NoError(t, err)
		})
	}
}

// The default up_ratio leaves out up values that are not 0..1, so a
// sender writing up=+Inf or NaN neither hides nor fakes its real targets.
func TestDefaultUpRatioIgnoresNonFiniteUp(t *testing.T) {
	st := promqltest.LoadedStorage(t, `
load 1m
  up{cluster="eu-1",job="a"} 1 1 1
  up{cluster="eu-1",job="b"} 0 0 0
  up{cluster="eu-1",job="inf"} +Inf +Inf +Inf
  up{cluster="eu-1",job="nan"} NaN NaN NaN
  up{cluster="eu-1",job="neg"} -Inf -Inf -Inf
  up{cluster="us-1",job="inf"} +Inf +Inf +Inf
`)
	eng := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	q := NewEngineQuerier(eng, st)
	var upRatio SignalConfig
	for _, s := range DefaultSignals {
		if s.Name == "up_ratio" {
			upRatio = s
		}
	}
	v, err := q.Instant(context.Background(), expand(upRatio.Expr, "eu-1"), time.Unix(120, 0))
	require.NoError(t, err)
	require.Len(t, v, 1)
	require.Equal(t, 0.5, float64(v[0].Value))

	// A cluster whose only up is +Inf has no up data: the signal is no_data, not down.
	reg := newFleet(t, "us-1")
	e, err := NewEvaluator(Config{DisableDefaultSignals: true, Signals: []SignalConfig{upRatio}}, q, reg, nil, logger)
	require.NoError(t, err)
	reg.Get("us-1").Written(time.Unix(120, 0), 1, 1, 0, 0)
	r := e.Step(context.Background(), time.Unix(120, 0))[0]
	s, _ := r.Signal("up_ratio")
	require.Equal(t, StatusNoData, s.Status)
	require.NotEqual(t, Down, r.State, r.Reason)
}
