package fleet

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimitsValidateAndApply(t *testing.T) {
	for _, tc := range []struct {
		l    Limits
		want string
	}{
		{Limits{MaxSeries: -1}, "max_series: must be 0 (unlimited) or positive, got -1"},
		{Limits{IngestionRate: -0.5}, "ingestion_rate"},
		{Limits{IngestionBurst: 5}, "ingestion_burst: set without ingestion_rate"},
		{Limits{LogsBurstBytes: 5}, "logs_burst_bytes: set without logs_rate_bytes"},
		{Limits{MaxOTLPAttributes: -3}, "max_otlp_attributes"},
	} {
		require.ErrorContains(t, tc.l.Validate(), tc.want)
	}
	d := DefaultLimits()
	require.NoError(t, d.Validate())

	rate, series, zero := 10.0, 5, 0
	got := (&LimitOverrides{IngestionRate: &rate, MaxSeries: &series, MaxLabelsPerSeries: &zero}).Apply(Limits{IngestionRate: 1, IngestionBurst: 3, MaxLabelsPerSeries: 64, MaxOTLPAttributes: 7})
	require.Equal(t, Limits{IngestionRate: 10, MaxSeries: 5, MaxOTLPAttributes: 7}, got, "an override of the rate drops the section's burst; 0 overrides to unlimited")
	require.Equal(t, 20, got.withBursts().IngestionBurst)

	cfg := Config{Clusters: []ClusterConfig{
		{Name: "a", Credentials: Credentials{BearerTokenEnv: "X"}},
		{Name: "b", Credentials: Credentials{BearerTokenEnv: "Y"}, Limits: &LimitOverrides{MaxSeries: new(int)}},
		{Name: "c", Credentials: Credentials{BearerTokenEnv: "Z"}, Limits: &LimitOverrides{IngestionBurst: &series}},
	}}
	require.ErrorContains(t, cfg.Validate(), "clusters[2].limits.ingestion_burst: set without ingestion_rate (cluster c)")
}

func TestClusterBucketsAndStatus(t *testing.T) {
	t.Setenv("FLEET_LIM_A", "a")
	rate := 10.0
	inflight := 1
	lim := DefaultLimits()
	lim.LogsRateBytes = 100
	r, err := NewRegistry(Config{Limits: &lim, Clusters: []ClusterConfig{
		{Name: "a", Credentials: Credentials{BearerTokenEnv: "FLEET_LIM_A"}, Limits: &LimitOverrides{IngestionRate: &rate, MaxInflightRequests: &inflight}},
	}})
	require.NoError(t, err)
	c := r.Get("a")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ok, _ := c.SampleBudget(t0)
	require.True(t, ok)
	ok, wait := c.TakeSamples(t0, 21)
	require.False(t, ok)
	require.Zero(t, wait, "more than the burst of 20 never fits")
	ok, _ = c.TakeSamples(t0, 20)
	require.True(t, ok)
	ok, wait = c.TakeSamples(t0, 5)
	require.False(t, ok)
	require.Equal(t, 500*time.Millisecond, wait)
	// Before decoding, a request needs as many tokens as the last one took (5).
	ok, wait = c.SampleBudget(t0)
	require.False(t, ok)
	require.Equal(t, 500*time.Millisecond, wait)
	ok, _ = c.SampleBudget(t0.Add(500 * time.Millisecond))
	require.True(t, ok)
	ok, _ = c.TakeLogBytes(t0, 200)
	require.True(t, ok, "logs have their own bucket (burst 2 x 100)")

	require.True(t, c.AcquireRequest())
	require.False(t, c.AcquireRequest())
	st := c.Status(t0)
	require.EqualValues(t, 1, st.Usage.InflightRequests)
	require.Equal(t, 10.0, st.Limits.IngestionRate)
	require.Equal(t, 20, st.Limits.IngestionBurst)
	c.ReleaseRequest()
	require.True(t, c.AcquireRequest())
	c.ReleaseRequest()

	// Dev-mode clusters get the section's limits; the registry reports active series when told how.
	dev, err := NewRegistry(Config{Limits: &lim})
	require.NoError(t, err)
	require.Equal(t, 200, dev.Dev("x").Limits().LogsBurstBytes)
	dev.SetSeriesCounter(fixedSeries(42))
	b, err := json.Marshal(dev.Statuses()[0])
	require.NoError(t, err)
	require.Contains(t, string(b), `"usage":{"activeSeries":42,"inflightRequests":0}`)
	require.Contains(t, string(b), `"max_labels_per_series":64`)
}

type fixedSeries int64

func (f fixedSeries) ActiveSeries(string) (int64, bool) { return int64(f), true }

// Values, which validation and the fleetgate_cluster_limit metric read,
// has every limits: key, in field order, with the field's value.
func TestLimitValuesAreEveryKey(t *testing.T) {
	var l Limits
	lv := reflect.ValueOf(&l).Elem()
	var keys []string
	for i := range lv.NumField() {
		keys = append(keys, strings.Split(lv.Type().Field(i).Tag.Get("yaml"), ",")[0])
		if f := lv.Field(i); f.CanInt() {
			f.SetInt(int64(i + 1))
		} else {
			f.SetFloat(float64(i + 1))
		}
	}
	var got []string
	for i, v := range l.Values() {
		got = append(got, v.Key)
		require.Equal(t, float64(i+1), v.Value, v.Key)
	}
	require.Equal(t, keys, got)
}
