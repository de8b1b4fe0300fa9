package promrw

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// benchRequests builds the same 2000 Kubernetes-like series (13 labels, one
// sample each) as remote-write 1.0 and 2.0 bodies.
func benchRequests(b *testing.B) (v1, v2 []byte) {
	r1 := &prompb.WriteRequest{}
	r2 := &writev2.Request{Symbols: []string{""}}
	sym := map[string]uint32{"": 0}
	ref := func(s string) uint32 {
		if r, ok := sym[s]; ok {
			return r
		}
		sym[s] = uint32(len(r2.Symbols))
		r2.Symbols = append(r2.Symbols, s)
		return sym[s]
	}
	for i := 0; i < 2000; i++ {
		pairs := []string{
			"__name__", "container_cpu_usage_seconds_total", "cluster", "cluster-1", "container", "app",
			"endpoint", "https-metrics", "id", fmt.Sprintf("/kubepods/burstable/pod%d", i),
			"image", "registry.example.com/payments/app:v1.2", "instance", "10.0.3.1:10250",
			"job", "kubelet", "metrics_path", "/metrics/cadvisor", "name", fmt.Sprintf("k8s_app_%d", i),
			"namespace", "payments", "node", "node-3", "pod", fmt.Sprintf("payments-app-%06x", i)}
		ts1 := prompb.TimeSeries{Samples: []prompb.Sample{{Value: float64(i), Timestamp: 1700000000000}}}
		ts2 := writev2.TimeSeries{Samples: []writev2.Sample{{Value: float64(i), Timestamp: 1700000000000}},
			Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: ref("CPU time.")}}
		for j := 0; j < len(pairs); j += 2 {
			ts1.Labels = append(ts1.Labels, prompb.Label{Name: pairs[j], Value: pairs[j+1]})
			ts2.LabelsRefs = append(ts2.LabelsRefs, ref(pairs[j]), ref(pairs[j+1]))
		}
		r1.Timeseries = append(r1.Timeseries, ts1)
		r2.Timeseries = append(r2.Timeseries, ts2)
	}
	var err error
	if v1, err = r1.Marshal(); err != nil {
		b.Fatal(err)
	}
	if v2, err = r2.Marshal(); err != nil {
		b.Fatal(err)
	}
	return v1, v2
}

func BenchmarkDecodeV1(b *testing.B) {
	body, _ := benchRequests(b)
	b.Run("pooled", func(b *testing.B) {
		req := &prompb.WriteRequest{}
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			if err := decodeV1(req, nil, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gogo", func(b *testing.B) {
		req := &prompb.WriteRequest{}
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			req.Timeseries = req.Timeseries[:0]
			if err := req.Unmarshal(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeV2(b *testing.B) {
	_, body := benchRequests(b)
	b.Run("pooled", func(b *testing.B) {
		req := &writev2.Request{}
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			if err := decodeV2(req, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gogo", func(b *testing.B) {
		req := &writev2.Request{}
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			req.Symbols, req.Timeseries = req.Symbols[:0], req.Timeseries[:0]
			if err := req.Unmarshal(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
