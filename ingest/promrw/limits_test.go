package promrw

import (
	"bytes"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/store/metrics"
)

// newLimitsEnv is eu-1 and eu-2 with limits (eu-1's own overrides on top)
// over the embedded TSDB with the per-cluster series limiter, as main wires it.
func newLimitsEnv(t testing.TB, lim fleet.Limits, eu1 *fleet.LimitOverrides) *env {
	t.Helper()
	fc := defaultFleet(t)
	fc.Limits = &lim
	fc.Clusters[0].Limits = eu1
	reg, err := fleet.NewRegistry(*fc)
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	sl, err := pipeline.NewSeriesLimiter(reg, nil)
	require.NoError(t, err)
	st, err := metrics.Open(metrics.Config{Path: filepath.Join(t.TempDir(), "data"), MaxExemplars: 1000}, nil, logger, metrics.WithSeriesLifecycle(sl))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	sl.Enforce()
	reg.SetSeriesCounter(sl)
	p, err := pipeline.New(pipeline.Config{}, reg, st, st.Metadata(), nil, logger)
	require.NoError(t, err)
	h, err := NewHandler(Config{}, p, nil, logger)
	require.NoError(t, err)
	return &env{h: h, store: st, reg: reg}
}

func v1(ts ...prompb.TimeSeries) *prompb.WriteRequest { return &prompb.WriteRequest{Timeseries: ts} }

func sampleAt(t time.Time, v float64) []prompb.Sample {
	return []prompb.Sample{{Timestamp: t.UnixMilli(), Value: v}}
}

// The regression of issue 9: one far-future sample from eu-1 must not make
// every cluster's current samples "out of bounds".
func TestFarFutureSampleIsRefusedAndOthersKeepWriting(t *testing.T) {
	now := time.Now()
	for _, version := range []string{"1.0", "2.0"} {
		t.Run(version, func(t *testing.T) {
			e := newLimitsEnv(t, fleet.DefaultLimits(), nil)
			post := func(tok string, ls labels.Labels, at time.Time) *httptest.ResponseRecorder {
				if version == "1.0" {
					var pl []prompb.Label
					ls.Range(func(l labels.Label) { pl = append(pl, prompb.Label{Name: l.Name, Value: l.Value}) })
					return e.post(t, v1Body(t, v1(prompb.TimeSeries{Labels: pl, Samples: sampleAt(at, 1)})), bearer(tok))
				}
				st := writev2.NewSymbolTable()
				req := &writev2.Request{Timeseries: []writev2.TimeSeries{{LabelsRefs: st.SymbolizeLabels(ls, nil), Samples: []writev2.Sample{{Value: 1, Timestamp: at.UnixMilli()}}}}}
				req.Symbols = st.Symbols()
				return e.post(t, v2Body(t, req), merge(bearer(tok), map[string]string{"Content-Type": ctV2}))
			}
			for _, far := range []time.Time{now.Add(3 * time.Hour), now.Add(365 * 24 * time.Hour), time.UnixMilli(math.MaxInt64)} {
				w := post(tokenEU1, labels.FromStrings("__name__", "poison", "job", "x"), far)
				require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
				require.Contains(t, w.Body.String(), `series {__name__="poison", cluster="eu-1", env="prod", job="x", region="eu"}`)
				require.Contains(t, w.Body.String(), "more than ingest.max_future (10m) ahead of now")
				if version == "2.0" {
					require.Equal(t, "0", w.Header().Get(headerSamplesWritten))
				}
			}
			require.EqualValues(t, 3, e.reg.Get("eu-1").Status(now).Rejections["too_far_in_future"])
			// Both clusters keep writing current samples.
			for i, tok := range []string{tokenEU2, tokenEU1} {
				w := post(tok, labels.FromStrings("__name__", "up", "job", "x"), now.Add(time.Duration(i)*time.Second))
				require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
			}
			require.Len(t, e.selectAll(t), 2, "only the two current series are stored")
			newest, err := e.store.MaxTime()
			require.NoError(t, err)
			require.Less(t, newest, now.Add(time.Minute).UnixMilli())
		})
	}
}

func TestLimitStatusCodes(t *testing.T) {
	now := time.Now()
	rate := 10.0
	for _, tc := range []struct {
		name      string
		eu1       fleet.LimitOverrides
		first     *prompb.WriteRequest // sent before, must be 204
		req       *prompb.WriteRequest
		status    int
		msg       string
		retry     bool
		reason    string
		storedEU2 bool // the same request from eu-2 (default limits) is accepted
	}{
		{name: "new series over max_series", eu1: fleet.LimitOverrides{MaxSeries: intp(1)},
			first: v1(prompb.TimeSeries{Labels: series("a"), Samples: sampleAt(now, 1)}),
			req: v1(prompb.TimeSeries{Labels: series("a"), Samples: sampleAt(now.Add(time.Second), 2)},
				prompb.TimeSeries{Labels: series("b"), Samples: sampleAt(now, 1)}),
			status: 400, msg: `cluster "eu-1" is at its limit of 1 active series (limits.max_series)`, reason: "series_limit", storedEU2: true},
		{name: "rate", eu1: fleet.LimitOverrides{IngestionRate: &rate},
			first: v1(prompb.TimeSeries{Labels: series("a"), Samples: []prompb.Sample{{Timestamp: now.UnixMilli(), Value: 1}, {Timestamp: now.UnixMilli() + 1, Value: 1}}}),
			req: v1(prompb.TimeSeries{Labels: series("a"), Samples: sampleAt(now.Add(time.Second), 1)},
				prompb.TimeSeries{Labels: series("b"), Samples: samplesFrom(now, 18)}),
			status: 429, msg: "ingestion rate limit of 10 samples/s (limits.ingestion_rate, burst 20)", retry: true, reason: "rate_limited", storedEU2: true},
		{name: "burst", eu1: fleet.LimitOverrides{IngestionRate: &rate},
			req:    v1(prompb.TimeSeries{Labels: series("a"), Samples: samplesFrom(now, 21)}),
			status: 413, msg: "more than its limits.ingestion_burst (20)", reason: "too_large", storedEU2: true},
		{name: "labels per series", eu1: fleet.LimitOverrides{MaxLabelsPerSeries: intp(2)},
			req:    v1(prompb.TimeSeries{Labels: series("a", "x", "1", "y", "2"), Samples: sampleAt(now, 1)}),
			status: 400, msg: "has 3 labels, more than limits.max_labels_per_series (2)", reason: "limit", storedEU2: true},
		{name: "label name length", eu1: fleet.LimitOverrides{MaxLabelNameLength: intp(3)},
			req:    v1(prompb.TimeSeries{Labels: series("a", "long", "1"), Samples: sampleAt(now, 1)}),
			status: 400, msg: "longer than limits.max_label_name_length (3)", reason: "limit", storedEU2: true},
		{name: "label value length", eu1: fleet.LimitOverrides{MaxLabelValueLength: intp(3)},
			req:    v1(prompb.TimeSeries{Labels: series("a", "x", "long"), Samples: sampleAt(now, 1)}),
			status: 400, msg: "longer than limits.max_label_value_length (3)", reason: "limit", storedEU2: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLimitsEnv(t, fleet.DefaultLimits(), &tc.eu1)
			if tc.first != nil {
				w := e.post(t, v1Body(t, tc.first), bearer(tokenEU1))
				require.Equal(t, 204, w.Code, w.Body.String())
			}
			w := e.post(t, v1Body(t, tc.req), bearer(tokenEU1))
			require.Equal(t, tc.status, w.Code, w.Body.String())
			require.Contains(t, w.Body.String(), tc.msg)
			if tc.retry {
				after, err := strconv.Atoi(w.Header().Get("Retry-After"))
				require.NoError(t, err)
				require.GreaterOrEqual(t, after, 1)
			} else {
				require.Empty(t, w.Header().Get("Retry-After"))
			}
			require.NotZero(t, e.reg.Get("eu-1").Status(now).Rejections[tc.reason])
			if tc.storedEU2 {
				w = e.post(t, v1Body(t, tc.req), bearer(tokenEU2))
				require.Equal(t, 204, w.Code, "eu-2 has the default limits: %s", w.Body.String())
			}
		})
	}
}

// In-flight requests are counted per cluster, and a request over the limit
// is refused before its body is read.
func TestInflightLimit(t *testing.T) {
	e := newLimitsEnv(t, fleet.DefaultLimits(), &fleet.LimitOverrides{MaxInflightRequests: intp(1)})
	eu1 := e.reg.Get("eu-1")
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/write", pr)
		r.Header.Set("Authorization", "Bearer "+tokenEU1)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		done <- w.Code
	}()
	require.Eventually(t, func() bool { return eu1.InflightRequests() == 1 }, 10*time.Second, time.Millisecond)

	body := v1Body(t, v1(prompb.TimeSeries{Labels: series("a"), Samples: sampleAt(time.Now(), 1)}))
	unread := &countingReader{r: bytes.NewReader(body)}
	r := httptest.NewRequest(http.MethodPost, "/api/v1/write", unread)
	r.Header.Set("Authorization", "Bearer "+tokenEU1)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	require.Equal(t, http.StatusTooManyRequests, w.Code, w.Body.String())
	require.Contains(t, w.Body.String(), "limits.max_inflight_requests")
	require.Equal(t, "1", w.Header().Get("Retry-After"))
	require.Zero(t, unread.n, "the refused body was not read")
	require.Equal(t, 204, e.post(t, body, bearer(tokenEU2)).Code, "eu-2 is not limited by eu-1's requests")

	_, _ = pw.Write(body)
	require.NoError(t, pw.Close())
	require.Equal(t, 204, <-done)
	require.EqualValues(t, 0, eu1.InflightRequests())
	require.Equal(t, 204, e.post(t, body, bearer(tokenEU1)).Code)
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A 400 for series with 10,000 labels does not echo them: the body lists
// the first problems, abbreviated, and counts the rest (1.0 and 2.0).
func TestErrorBodyIsCapped(t *testing.T) {
	e := newLimitsEnv(t, fleet.DefaultLimits(), nil)
	huge := series("huge")
	for i := range 10_000 {
		huge = append(huge, prompb.Label{Name: "l" + strconv.Itoa(100000+i), Value: strings.Repeat("v", 8)})
	}
	var ts []prompb.TimeSeries
	for i := range 50 {
		ls := append([]prompb.Label{{Name: "n", Value: strconv.Itoa(i)}}, huge...)
		ts = append(ts, prompb.TimeSeries{Labels: ls, Samples: sampleAt(time.Now(), 1)})
	}
	w := e.post(t, v1Body(t, v1(ts...)), bearer(tokenEU1))
	require.Equal(t, 400, w.Code)
	require.Less(t, w.Body.Len(), 8<<10, "was 120 KB for one such series")
	require.Contains(t, w.Body.String(), "and 40 more")
	require.Contains(t, w.Body.String(), "more than limits.max_labels_per_series (64)")

	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for range 30 {
		req.Timeseries = append(req.Timeseries, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}})
	}
	req.Symbols = st.Symbols()
	w = e.post(t, v2Body(t, req), merge(bearer(tokenEU1), map[string]string{"Content-Type": ctV2}))
	require.Equal(t, 400, w.Code)
	require.Contains(t, w.Body.String(), "30 series refused")
	require.Contains(t, w.Body.String(), "and 20 more")
}

func intp(n int) *int { return &n }

// samplesFrom is n samples 1 ms apart from t on.
func samplesFrom(t time.Time, n int) []prompb.Sample {
	out := make([]prompb.Sample, n)
	for i := range out {
		out[i] = prompb.Sample{Timestamp: t.UnixMilli() + int64(i), Value: float64(i)}
	}
	return out
}
