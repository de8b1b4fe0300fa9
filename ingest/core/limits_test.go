package core

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
)

// twoClusters is eu-1 (with the given limit overrides) and us-1 (defaults of lim).
func twoClusters(t testing.TB, lim fleet.Limits, eu *fleet.LimitOverrides) *fleet.Registry {
	t.Helper()
	t.Setenv("FG_LIM_EU1", "tok-eu-1")
	t.Setenv("FG_LIM_US1", "tok-us-1")
	reg, err := fleet.NewRegistry(fleet.Config{Limits: &lim, Clusters: []fleet.ClusterConfig{
		{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_EU1"}, Limits: eu},
		{Name: "us-1", Credentials: fleet.Credentials{BearerTokenEnv: "FG_LIM_US1"}},
	}})
	require.NoError(t, err)
	return reg
}

func intp(n int) *int { return &n }

// The request limits: in-flight slots and the sample bucket, per cluster.
func TestLimiter(t *testing.T) {
	lim := fleet.DefaultLimits()
	reg := twoClusters(t, lim, &fleet.LimitOverrides{MaxInflightRequests: intp(2), IngestionRate: func() *float64 { f := 100.0; return &f }()})
	l, err := NewLimiter(reg, nil)
	require.NoError(t, err)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return t0 }
	eu, us := reg.Get("eu-1"), reg.Get("us-1")

	require.NoError(t, l.Admit(eu, BudgetSamples))
	require.NoError(t, l.Admit(eu, BudgetSamples))
	err = l.Admit(eu, BudgetSamples)
	require.Equal(t, http.StatusTooManyRequests, ErrorStatus(err))
	require.Contains(t, err.Error(), `cluster "eu-1" already has 2 requests in flight (limits.max_inflight_requests)`)
	require.Equal(t, time.Second, ErrorRetryAfter(err))
	require.EqualValues(t, 2, eu.InflightRequests())
	for range 10 {
		require.NoError(t, l.Admit(us, BudgetSamples), "another cluster is not limited by eu-1's slots")
	}
	l.Done(eu)
	require.NoError(t, l.Admit(eu, BudgetSamples))
	l.Done(eu)
	l.Done(eu)
	require.EqualValues(t, 0, eu.InflightRequests())

	// Rate 100/s, burst 200.
	require.NoError(t, l.TakeSamples(eu, 150))
	err = l.TakeSamples(eu, 100)
	require.Equal(t, http.StatusTooManyRequests, ErrorStatus(err))
	require.Contains(t, err.Error(), "ingestion rate limit of 100 samples/s (limits.ingestion_rate, burst 200)")
	require.Equal(t, 500*time.Millisecond, ErrorRetryAfter(err), "50 more samples at 100/s")
	require.Equal(t, "1", RetryAfter(ErrorRetryAfter(err)))
	err = l.TakeSamples(eu, 201)
	require.Equal(t, http.StatusRequestEntityTooLarge, ErrorStatus(err))
	require.Contains(t, err.Error(), "more than its limits.ingestion_burst (200)")
	require.NoError(t, l.TakeSamples(eu, 50))
	// A bucket without the tokens the last request took (50) is refused
	// before the body is read.
	err = l.Admit(eu, BudgetSamples)
	require.Equal(t, http.StatusTooManyRequests, ErrorStatus(err))
	require.Equal(t, 500*time.Millisecond, ErrorRetryAfter(err))
	require.EqualValues(t, 0, eu.InflightRequests(), "a refused request holds no slot")
	require.NoError(t, l.Admit(eu, BudgetNone), "traces draw from no bucket")
	l.Done(eu)
	t0 = t0.Add(time.Second)
	require.NoError(t, l.TakeSamples(eu, 100), "the bucket refills at the rate")
	require.NoError(t, l.TakeSamples(us, 1_000_000), "us-1 is unlimited")
	st := eu.Status(t0)
	require.EqualValues(t, 1, st.Rejections["inflight_limit"])
	require.EqualValues(t, 100+1, st.Rejections["rate_limited"], "100 samples, and 1 request refused before its body")
	require.EqualValues(t, 201, st.Rejections["too_large"])
}

// fleetgate_cluster_limit has every limit of every cluster, by its limits: key.
func TestLimitsCollector(t *testing.T) {
	five := 5
	reg := twoClusters(t, fleet.DefaultLimits(), &fleet.LimitOverrides{MaxSeries: &five})
	lc := limitsCollector{reg}
	dl := reg.DefaultLimits()
	require.Equal(t, 2*len(dl.Values()), testutil.CollectAndCount(lc, "fleetgate_cluster_limit"))
	pr := prometheus.NewPedanticRegistry()
	pr.MustRegister(lc)
	mfs, err := pr.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()+"/"+m.GetLabel()[1].GetValue()] = m.GetGauge().GetValue()
	}
	require.Equal(t, 5.0, got["eu-1/max_series"])
	require.Equal(t, 4096.0, got["eu-1/max_label_value_length"])
	require.Equal(t, 0.0, got["us-1/max_series"])
	require.Equal(t, 128.0, got["us-1/max_otlp_attributes"])
}
