package promrw

import (
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/stretchr/testify/require"
)

func sampleV1() *prompb.WriteRequest {
	h := &histogram.Histogram{Count: 5, Sum: 3, Schema: 1, ZeroThreshold: 0.001, ZeroCount: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, 0}}
	return &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				Labels:    []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "node"}, {Name: "cluster", Value: "a"}},
				Samples:   []prompb.Sample{{Value: 1, Timestamp: 1000}, {Value: 2, Timestamp: 2000}},
				Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: 1500}},
			},
			{
				Labels:     []prompb.Label{{Name: "__name__", Value: "latency"}},
				Histograms: []prompb.Histogram{prompb.FromIntHistogram(3000, h)},
			},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "up", Help: "h", Unit: "u"}},
	}
}

func sampleV2() *writev2.Request {
	h := &histogram.FloatHistogram{Count: 5, Sum: 3, Schema: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{5}}
	return &writev2.Request{
		Symbols: []string{"", "__name__", "up", "job", "node", "help", "trace_id", "abc"},
		Timeseries: []writev2.TimeSeries{
			{
				LabelsRefs: []uint32{1, 2, 3, 4},
				Samples:    []writev2.Sample{{Value: 1, Timestamp: 1000, StartTimestamp: 10}},
				Exemplars:  []writev2.Exemplar{{LabelsRefs: []uint32{6, 7}, Value: 1, Timestamp: 1000}},
				Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: 5},
			},
			{
				LabelsRefs: []uint32{1, 2},
				Histograms: []writev2.Histogram{writev2.FromFloatHistogram(0, 2000, h)},
			},
		},
	}
}

func marshalV1Clean(t testing.TB, r *prompb.WriteRequest) []byte {
	r.XXX_unrecognized = nil
	for i := range r.Timeseries {
		r.Timeseries[i].XXX_unrecognized = nil
		for j := range r.Timeseries[i].Labels {
			r.Timeseries[i].Labels[j].XXX_unrecognized = nil
		}
	}
	b, err := r.Marshal()
	require.NoError(t, err)
	return b
}

func marshalV2Clean(t testing.TB, r *writev2.Request) []byte {
	r.XXX_unrecognized = nil
	for i := range r.Timeseries {
		r.Timeseries[i].XXX_unrecognized = nil
		r.Timeseries[i].Metadata.XXX_unrecognized = nil
	}
	b, err := r.Marshal()
	require.NoError(t, err)
	return b
}

// checkDecode compares the pooled decoders with the generated ones on body,
// decoding twice into the same reused value to catch stale reuse.
func checkDecode(t testing.TB, body []byte, reuse1 *prompb.WriteRequest, reuse2 *writev2.Request) {
	var want1 prompb.WriteRequest
	err1 := want1.Unmarshal(body)
	got1 := decodeV1(reuse1, nil, body)
	require.Equal(t, err1 == nil, got1 == nil, "v1 error mismatch: generated %v, pooled %v", err1, got1)
	if err1 == nil {
		require.Equal(t, marshalV1Clean(t, &want1), marshalV1Clean(t, reuse1))
	}
	var want2 writev2.Request
	err2 := want2.Unmarshal(body)
	got2 := decodeV2(reuse2, body)
	require.Equal(t, err2 == nil, got2 == nil, "v2 error mismatch: generated %v, pooled %v", err2, got2)
	if err2 == nil {
		require.Equal(t, marshalV2Clean(t, &want2), marshalV2Clean(t, reuse2))
	}
}

func TestDecodeMatchesGenerated(t *testing.T) {
	b1, err := sampleV1().Marshal()
	require.NoError(t, err)
	b2, err := sampleV2().Marshal()
	require.NoError(t, err)
	r1, r2 := &prompb.WriteRequest{}, &writev2.Request{}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"v1", b1}, {"v2", b2}, {"empty", nil},
		{"truncated v1", b1[:len(b1)-3]}, {"truncated v2", b2[:len(b2)-5]},
		{"bad wire type", []byte{0x0b, 0x01}}, {"overlong varint", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"unknown field", append([]byte{0x10, 0x05}, b1...)},
		{"group", []byte{0x13, 0x14}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkDecode(t, tc.body, r1, r2)
			checkDecode(t, b1, r1, r2) // reuse after anything
			checkDecode(t, b2, r1, r2)
		})
	}
}

func TestDecodeReuseDoesNotAllocate(t *testing.T) {
	b1, _ := sampleV1().Marshal()
	r1 := &prompb.WriteRequest{}
	req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 1000)}
	for i := range req.Timeseries {
		req.Timeseries[i] = prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "pod", Value: "p"}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: 2}},
		}
	}
	big, err := req.Marshal()
	require.NoError(t, err)
	require.NoError(t, decodeV1(r1, nil, big))
	allocs := testing.AllocsPerRun(10, func() {
		if err := decodeV1(r1, nil, big); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
	require.NoError(t, decodeV1(r1, nil, b1))
}

// FuzzDecode checks both pooled decoders against the generated gogo ones.
func FuzzDecode(f *testing.F) {
	b1, _ := sampleV1().Marshal()
	b2, _ := sampleV2().Marshal()
	f.Add(b1)
	f.Add(b2)
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	r1, r2 := &prompb.WriteRequest{}, &writev2.Request{}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDecode(t, body, r1, r2)
	})
}
