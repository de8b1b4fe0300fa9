package load

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/stretchr/testify/require"
)

func TestSeriesLabelsAreUniqueAndRealistic(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200_000; i++ {
		ls := SeriesLabels("cluster-0", i, 0)
		require.GreaterOrEqual(t, len(ls), 8)
		require.LessOrEqual(t, len(ls), 15)
		for j := 1; j < len(ls); j++ {
			require.Less(t, ls[j-1].Name, ls[j].Name, "sorted, no duplicates")
		}
		k := fmt.Sprint(ls)
		require.False(t, seen[k], "series %d repeats %s", i, k)
		seen[k] = true
	}
	require.NotEqual(t, fmt.Sprint(SeriesLabels("c", 7, 0)), fmt.Sprint(SeriesLabels("c", 7, 1)), "a new generation is a new series")
}

func TestEncodersMatchProtobuf(t *testing.T) {
	ls := SeriesLabels("cluster-3", 42, 1)
	vals, ts := []float64{1.5, 2.5}, []int64{1000, 16000}

	b := appendSeriesV1(nil, encodeLabelsV1(ls), vals, ts)
	var r1 prompb.WriteRequest
	require.NoError(t, r1.Unmarshal(b))
	require.Len(t, r1.Timeseries, 1)
	require.Len(t, r1.Timeseries[0].Labels, len(ls))
	for i, l := range ls {
		require.Equal(t, l.Name, r1.Timeseries[0].Labels[i].Name)
		require.Equal(t, l.Value, r1.Timeseries[0].Labels[i].Value)
	}
	require.Equal(t, []prompb.Sample{{Value: 1.5, Timestamp: 1000}, {Value: 2.5, Timestamp: 16000}}, r1.Timeseries[0].Samples)

	sym := newSymbolizer()
	series, _ := appendSeriesV2(nil, sym, ls, vals, ts, nil)
	var r2 writev2.Request
	require.NoError(t, r2.Unmarshal(finishV2(nil, sym, series)))
	require.Len(t, r2.Timeseries, 1)
	got := r2.Timeseries[0]
	for i, l := range ls {
		require.Equal(t, l.Name, r2.Symbols[got.LabelsRefs[2*i]])
		require.Equal(t, l.Value, r2.Symbols[got.LabelsRefs[2*i+1]])
	}
	require.Equal(t, writev2.Metadata_METRIC_TYPE_COUNTER, got.Metadata.Type)
	require.Equal(t, []writev2.Sample{{Value: 1.5, Timestamp: 1000}, {Value: 2.5, Timestamp: 16000}}, got.Samples)
}
