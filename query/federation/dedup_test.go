package federation

import (
	"testing"

	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/stretchr/testify/require"
)

func TestDedupPair(t *testing.T) {
	mk := func(ts ...int64) []chunks.Sample {
		out := make([]chunks.Sample, len(ts))
		for i, t := range ts {
			out[i] = sample{t: t, f: float64(t)}
		}
		return out
	}
	ts := func(s []chunks.Sample) []int64 {
		out := make([]int64, len(s))
		for i := range s {
			out[i] = s[i].T()
		}
		return out
	}
	for _, tc := range []struct {
		name string
		a, b []int64
		want []int64
	}{
		{"identical", []int64{0, 15000, 30000}, []int64{0, 15000, 30000}, []int64{0, 15000, 30000}},
		{"shifted replicas keep one rate", []int64{0, 15000, 30000, 45000}, []int64{7000, 22000, 37000, 52000}, []int64{0, 15000, 30000, 45000}},
		{"gap in a is filled by b", []int64{0, 15000, 90000, 105000}, []int64{7000, 22000, 37000, 52000, 67000, 82000, 97000, 112000}, []int64{0, 15000, 52000, 67000, 82000, 97000, 112000}},
		{"a empty", nil, []int64{1, 2}, []int64{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, ts(dedupPair(mk(tc.a...), mk(tc.b...))))
		})
	}
}
