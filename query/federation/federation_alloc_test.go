package federation

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/stretchr/testify/require"
)

// Reading a remote series into memory costs no heap allocation per sample.
func TestReadSeriesSetAllocationsDoNotGrowPerSample(t *testing.T) {
	allocs := func(n int) float64 {
		in := make([]chunks.Sample, n)
		for i := range in {
			in[i] = sample{t: int64(i) * 1000, f: float64(i)}
		}
		series := storage.NewListSeries(labels.FromStrings("__name__", "x"), in)
		return testing.AllocsPerRun(20, func() {
			out, _, err := readSeriesSet(&oneSeries{s: series})
			if err != nil || len(out[0].samples) != n {
				t.Fatal("bad read")
			}
		})
	}
	small, large := allocs(100), allocs(10_000)
	require.Less(t, large-small, 100.0, "allocations grew from %.0f to %.0f for 100x the samples", small, large)
}

// oneSeries is a series set of exactly one series.
type oneSeries struct {
	s    storage.Series
	done bool
}

func (o *oneSeries) Next() bool {
	if o.done {
		return false
	}
	o.done = true
	return true
}
func (o *oneSeries) At() storage.Series                { return o.s }
func (o *oneSeries) Err() error                        { return nil }
func (o *oneSeries) Warnings() annotations.Annotations { return nil }
