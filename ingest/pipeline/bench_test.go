package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetgate/fleetgate/fleet"
)

func benchSeries(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		out[i] = labels.FromStrings(
			"__name__", "container_cpu_usage_seconds_total", "container", "app", "cpu", "total",
			"endpoint", "https-metrics", "id", fmt.Sprintf("/kubepods/burstable/pod%d", i),
			"image", "registry.example.com/payments/app:v1.2", "instance", "10.0.3.1:10250",
			"job", "kubelet", "metrics_path", "/metrics/cadvisor", "namespace", "payments",
			"node", "node-3", "pod", fmt.Sprintf("payments-app-%06x", i))
	}
	return out
}

func BenchmarkStamp(b *testing.B) {
	b.Setenv("TOKEN_A", "a-token")
	p, _, reg := newTestPipeline(b, fleet.ClusterConfig{Name: "a", Region: "eu", Credentials: fleet.Credentials{BearerTokenEnv: "TOKEN_A"}})
	batch := p.Begin(context.Background(), reg.Get("a"))
	defer batch.Abort()
	series := benchSeries(1000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := batch.stamp(series[i%len(series)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppend appends and commits requests of 1000 known series, one
// sample each, into a real TSDB, with and without the series cache.
func BenchmarkAppend(b *testing.B) {
	for _, cached := range []bool{true, false} {
		b.Run(fmt.Sprintf("cached=%v", cached), func(b *testing.B) {
			b.Setenv("TOKEN_A", "a-token")
			p, _, reg := newTestPipeline(b, fleet.ClusterConfig{Name: "a", Region: "eu", Credentials: fleet.Credentials{BearerTokenEnv: "TOKEN_A"}})
			if !cached {
				p.refs = nil
			}
			c := reg.Get("a")
			series := benchSeries(1000)
			s := &Series{Samples: make([]Sample, 1)}
			run := func(ts int64) {
				batch := p.Begin(context.Background(), c)
				for _, ls := range series {
					s.Labels = ls
					s.Samples[0] = Sample{T: ts, V: float64(ts)}
					if err := batch.Add(s); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := batch.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			run(0) // create the series
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run(int64(i+1) * 15000)
			}
			b.ReportMetric(float64(b.N*len(series))/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

// BenchmarkRefCacheGet looks up 1M known series in random order, as a
// 1M-series remote-write load does.
func BenchmarkRefCacheGet(b *testing.B) {
	rc := newRefCache(DefaultConfig().SeriesCacheBytes)
	const n = 1 << 20
	keys := make([]refKey, n)
	for i := range keys {
		keys[i] = rc.key("stamp", []byte(fmt.Sprintf("series-%d", i)))
		rc.set(&keys[i], storage.SeriesRef(i+1))
	}
	perm := rand.Perm(n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if rc.get(&keys[perm[i&(n-1)]]) == 0 {
			b.Fatal("miss")
		}
	}
}

// BenchmarkDropFuture checks a series of 100 samples and 10 histograms
// against ingest.max_future: none ahead (every request's cost), or the last
// sample and histogram ahead.
func BenchmarkDropFuture(b *testing.B) {
	b.Setenv("TOKEN_A", "a-token")
	p, _, reg := newTestPipeline(b, fleet.ClusterConfig{Name: "a", Region: "eu", Credentials: fleet.Credentials{BearerTokenEnv: "TOKEN_A"}})
	c := reg.Get("a")
	batch := p.Begin(context.Background(), c)
	defer batch.Abort()
	ls := benchSeries(1)[0]
	for _, future := range []bool{false, true} {
		b.Run(fmt.Sprintf("future=%v", future), func(b *testing.B) {
			s := &Series{Labels: ls, Samples: make([]Sample, 100), Histograms: make([]HistogramSample, 10)}
			fill := func() {
				s.Samples, s.Histograms = s.Samples[:100], s.Histograms[:10]
				for i := range s.Samples {
					s.Samples[i].T = batch.maxT - int64(len(s.Samples)-i)
				}
				for i := range s.Histograms {
					s.Histograms[i].T = batch.maxT - int64(len(s.Histograms)-i)
				}
				if future {
					s.Samples[99].T = batch.maxT + 1
					s.Histograms[9].T = batch.maxT + 1
				}
			}
			fill()
			want := 0
			if future {
				want = 2
			}
			b.ReportAllocs()
			for b.Loop() {
				if future {
					fill()
				}
				if n := batch.dropFuture(c, s, ls); n != want {
					b.Fatalf("dropped %d, want %d", n, want)
				}
			}
		})
	}
}
