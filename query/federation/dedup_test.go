package federation

import (
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/stretchr/testify/require"
)

// pt is a sample as the tests write it: a float, or a histogram whose count
// is v.
type pt struct {
	t    int64
	v    float64
	hist bool
}

func samples(ps ...pt) []chunks.Sample {
	out := make([]chunks.Sample, len(ps))
	for i, p := range ps {
		if p.hist {
			out[i] = sample{t: p.t, h: &histogram.Histogram{Count: uint64(p.v), Sum: p.v}}
		} else {
			out[i] = sample{t: p.t, f: p.v}
		}
	}
	return out
}

func points(s []chunks.Sample) []pt {
	out := make([]pt, len(s))
	for i := range s {
		switch s[i].Type() {
		case chunkenc.ValHistogram:
			out[i] = pt{t: s[i].T(), v: float64(s[i].H().Count), hist: true}
		default:
			out[i] = pt{t: s[i].T(), v: s[i].F()}
		}
	}
	return out
}

// every makes float samples of value v at the given times.
func every(v float64, ts ...int64) []pt {
	out := make([]pt, len(ts))
	for i, t := range ts {
		out[i] = pt{t: t, v: v}
	}
	return out
}

// hists makes histogram samples of count v at the given times.
func hists(v float64, ts ...int64) []pt {
	out := every(v, ts...)
	for i := range out {
		out[i].hist = true
	}
	return out
}

// TestDedupPair: two replicas of one series become one, following one
// replica and switching only across its gaps.
func TestDedupPair(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []pt
		want []pt
	}{
		{"identical replicas", every(1, 0, 15000, 30000), every(1, 0, 15000, 30000), every(1, 0, 15000, 30000)},
		{"shifted replicas keep one rate", every(1, 0, 15000, 30000, 45000), every(2, 7000, 22000, 37000, 52000), every(1, 0, 15000, 30000, 45000)},
		{"gap in a is filled from b",
			every(1, 0, 15000, 90000, 105000),
			every(2, 7000, 22000, 37000, 52000, 67000, 82000, 97000, 112000),
			append(every(1, 0, 15000), every(2, 52000, 67000, 82000, 97000, 112000)...)},
		{"b starts first, then dies: a takes over after the penalty",
			every(1, 7000, 22000, 37000, 52000, 67000),
			every(2, 0, 15000),
			append(every(2, 0, 15000), every(1, 52000, 67000)...)},
		{"disagreeing values: the first replica wins", every(1, 0, 15000, 30000), every(2, 0, 15000, 30000), every(1, 0, 15000, 30000)},
		{"a empty", nil, every(2, 1, 2), every(2, 1, 2)},
		{"b empty", every(1, 1, 2), nil, every(1, 1, 2)},
		{"both empty", nil, nil, nil},
		{"histograms: identical", hists(3, 0, 15000), hists(3, 0, 15000), hists(3, 0, 15000)},
		{"histograms: gap filled from the other replica",
			hists(1, 0, 15000, 90000),
			hists(2, 7000, 22000, 37000, 52000, 67000, 82000, 97000),
			append(hists(1, 0, 15000), hists(2, 52000, 67000, 82000, 97000)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dedupPair(samples(tc.a...), samples(tc.b...))
			if len(tc.want) == 0 {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, points(got))
		})
	}
}

// TestDedupReplicas: the series of several replicas (and clusters) in, the
// merged series out, in the order their first replica appeared.
func TestDedupReplicas(t *testing.T) {
	type series struct {
		lset labels.Labels
		pts  []pt
	}
	for _, tc := range []struct {
		name          string
		replicaLabels []string
		in, want      []series
	}{
		{
			name:          "HA pair becomes one series, other series untouched",
			replicaLabels: []string{"replica"},
			in: []series{
				{labels.FromStrings("__name__", "up", "job", "a", "replica", "r1"), every(1, 0, 15000, 30000)},
				{labels.FromStrings("__name__", "up", "job", "b", "replica", "r1"), every(1, 0)},
				{labels.FromStrings("__name__", "up", "job", "a", "replica", "r2"), every(1, 7000, 22000, 37000)},
			},
			want: []series{
				{labels.FromStrings("__name__", "up", "job", "a"), every(1, 0, 15000, 30000)},
				{labels.FromStrings("__name__", "up", "job", "b"), every(1, 0)},
			},
		},
		{
			name:          "three replicas, one empty, one dying",
			replicaLabels: []string{"replica"},
			in: []series{
				{labels.FromStrings("__name__", "up", "replica", "r1"), every(1, 0, 15000)},
				{labels.FromStrings("__name__", "up", "replica", "r2"), nil},
				{labels.FromStrings("__name__", "up", "replica", "r3"), every(3, 7000, 22000, 37000, 52000)},
			},
			want: []series{{labels.FromStrings("__name__", "up"), append(every(1, 0, 15000), every(3, 52000)...)}},
		},
		{
			name:          "several replica labels, a series without any",
			replicaLabels: []string{"replica", "prometheus_replica"},
			in: []series{
				{labels.FromStrings("__name__", "up"), every(1, 0)},
				{labels.FromStrings("__name__", "up", "prometheus_replica", "p1"), every(2, 15000)},
				{labels.FromStrings("__name__", "up", "replica", "r1"), every(3, 15000)},
			},
			want: []series{{labels.FromStrings("__name__", "up"), append(every(1, 0), every(2, 15000)...)}},
		},
		{
			name:          "native histograms",
			replicaLabels: []string{"replica"},
			in: []series{
				{labels.FromStrings("__name__", "lat", "replica", "r1"), hists(1, 0, 15000, 90000)},
				{labels.FromStrings("__name__", "lat", "replica", "r2"), hists(2, 7000, 22000, 37000, 52000, 67000, 82000, 97000)},
			},
			want: []series{{labels.FromStrings("__name__", "lat"), append(hists(1, 0, 15000), hists(2, 52000, 67000, 82000, 97000)...)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := make([]fetched, len(tc.in))
			for i, s := range tc.in {
				in[i] = fetched{lset: s.lset, samples: samples(s.pts...)}
			}
			got := dedupReplicas(in, tc.replicaLabels)
			want := make([]series, 0, len(got))
			out := make([]series, 0, len(got))
			for _, s := range tc.want {
				want = append(want, series{s.lset, s.pts})
			}
			for _, f := range got {
				out = append(out, series{f.lset, points(f.samples)})
			}
			require.Equal(t, want, out)
			for i, s := range tc.in {
				require.Equal(t, s.lset, in[i].lset, "the input is not modified")
			}
		})
	}
}
