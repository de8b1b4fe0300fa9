package pipeline

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

// TestExemplarsAsPrometheus: exemplars are appended after the series'
// samples, sorted, also when the samples were refused or the series carries
// only exemplars; refused exemplars are counted and never fail the batch.
func TestExemplarsAsPrometheus(t *testing.T) {
	now := time.Now().Truncate(time.Second).UnixMilli()
	ex := func(trace string, t int64) exemplar.Exemplar {
		return exemplar.Exemplar{Labels: labels.FromStrings("trace_id", trace), Value: 1, Ts: t, HasTs: true}
	}
	up := labels.FromStrings("__name__", "up")
	for _, tc := range []struct {
		name      string
		series    Series // sent after one sample of up at now with exemplar "a" at now
		written   Written
		stored    []string // exemplars of up afterwards, by trace_id
		ooo       bool
		rejection string
	}{
		{
			name:    "sorted before appending",
			series:  Series{Labels: up, Samples: []Sample{{T: now + 2000, V: 1}}, Exemplars: []exemplar.Exemplar{ex("c", now+2000), ex("b", now+1000)}},
			written: Written{Series: 1, Samples: 1, Exemplars: 2},
			stored:  []string{"a", "b", "c"},
		},
		{
			name:    "out of order: counted and reported",
			series:  Series{Labels: up, Samples: []Sample{{T: now + 1000, V: 1}}, Exemplars: []exemplar.Exemplar{ex("b", now-1000)}},
			written: Written{Series: 1, Samples: 1}, stored: []string{"a"}, ooo: true, rejection: "out_of_order_exemplar",
		},
		{
			name:    "labels too long: counted",
			series:  Series{Labels: up, Samples: []Sample{{T: now + 1000, V: 1}}, Exemplars: []exemplar.Exemplar{ex(strings.Repeat("x", 200), now+1000)}},
			written: Written{Series: 1, Samples: 1}, stored: []string{"a"}, rejection: "invalid_exemplar",
		},
		{
			name:    "too far ahead: dropped",
			series:  Series{Labels: up, Samples: []Sample{{T: now + 1000, V: 1}}, Exemplars: []exemplar.Exemplar{ex("b", now+int64(time.Hour/time.Millisecond))}},
			written: Written{Series: 1, Samples: 1}, stored: []string{"a"}, rejection: "invalid_exemplar",
		},
		{
			name:    "on a refused sample: still appended",
			series:  Series{Labels: up, Samples: []Sample{{T: now - 1000, V: 1}}, Exemplars: []exemplar.Exemplar{ex("b", now+1000)}},
			written: Written{Series: 1, Exemplars: 1}, stored: []string{"a", "b"},
		},
		{
			name:    "exemplars only, known series",
			series:  Series{Labels: up, Exemplars: []exemplar.Exemplar{ex("b", now+1000)}},
			written: Written{Exemplars: 1}, stored: []string{"a", "b"},
		},
		{
			name:    "exemplars only, unknown series: counted",
			series:  Series{Labels: labels.FromStrings("__name__", "other"), Exemplars: []exemplar.Exemplar{ex("b", now+1000)}},
			written: Written{}, stored: []string{"a"}, rejection: "invalid_exemplar",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := testRegistry(t, "eu-1")
			opts := tsdb.DefaultOptions()
			opts.EnableExemplarStorage, opts.MaxExemplars = true, 1000
			db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, opts, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			p, err := New(Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			c := reg.Get("eu-1")

			b := p.Begin(context.Background(), c)
			require.NoError(t, b.Add(&Series{Labels: up, Samples: []Sample{{T: now, V: 1}}, Exemplars: []exemplar.Exemplar{ex("a", now)}}))
			w, err := b.Commit()
			require.NoError(t, err)
			require.Equal(t, Written{Series: 1, Samples: 1, Exemplars: 1}, w)

			b = p.Begin(context.Background(), c)
			require.NoError(t, b.Add(&tc.series))
			w, err = b.Commit()
			if len(tc.series.Samples) > 0 && tc.series.Samples[0].T < now {
				require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err), "the refused sample is reported")
			} else {
				require.NoError(t, err, "exemplars never fail the batch")
			}
			require.Equal(t, tc.written, w)
			if tc.ooo {
				require.ErrorContains(t, b.OutOfOrderExemplars(), "out of order exemplar")
			} else {
				require.NoError(t, b.OutOfOrderExemplars())
			}
			if tc.rejection != "" {
				require.EqualValues(t, 1, c.Status(time.Now()).Rejections[tc.rejection])
			}

			eq, err := db.ExemplarQuerier(context.Background())
			require.NoError(t, err)
			res, err := eq.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")})
			require.NoError(t, err)
			var got []string
			for _, r := range res {
				for _, e := range r.Exemplars {
					got = append(got, e.Labels.Get("trace_id"))
				}
			}
			require.Equal(t, tc.stored, got)
		})
	}
}

// TestInvalidHistogramIs400: every native histogram validation error is the
// sender's (400), never a storage failure (500).
func TestInvalidHistogramIs400(t *testing.T) {
	now := time.Now().UnixMilli()
	for name, h := range map[string]HistogramSample{
		"negative count":         {T: now, FH: &histogram.FloatHistogram{Count: -1, Sum: 1}},
		"custom bounds unsorted": {T: now, H: &histogram.Histogram{Count: 1, Schema: histogram.CustomBucketsSchema, CustomValues: []float64{2, 1}, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}}},
		"count too small":        {T: now, H: &histogram.Histogram{Count: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{2}}},
		"unknown schema":         {T: now, H: &histogram.Histogram{Count: 1, Schema: 60, ZeroCount: 1}},
	} {
		t.Run(name, func(t *testing.T) {
			reg := testRegistry(t, "eu-1")
			db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			p, err := New(Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			b := p.Begin(context.Background(), reg.Get("eu-1"))
			require.NoError(t, b.Add(&Series{Labels: labels.FromStrings("__name__", "h"), Histograms: []HistogramSample{h}}))
			require.NoError(t, b.Add(&Series{Labels: labels.FromStrings("__name__", "ok"), Samples: []Sample{{T: now, V: 1}}}))
			w, err := b.Commit()
			require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err), "%v", err)
			require.Equal(t, Written{Series: 2, Samples: 1}, w, "the valid series is written")
		})
	}
}

func testRegistry(t *testing.T, names ...string) *fleet.Registry {
	var cc []fleet.ClusterConfig
	for _, n := range names {
		cc = append(cc, fleet.ClusterConfig{Name: n, Credentials: fleet.Credentials{TLSNames: []string{n}}})
	}
	r, err := fleet.NewRegistry(fleet.Config{Clusters: cc})
	require.NoError(t, err)
	return r
}
func intp(n int) *int { return &n }
