package promrw

import (
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// fuzzHandler feeds arbitrary decoded protobuf bytes to the handler: no input
// may panic it or get a 5xx (there is no storage failure here).
func fuzzHandler(f *testing.F, contentType string, seeds ...[]byte) {
	for _, s := range seeds {
		f.Add(s)
	}
	e := newEnv(f, nil, pipeline.Config{}, Config{})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := e.post(t, snappy.Encode(nil, body), map[string]string{"Authorization": "Bearer " + tokenEU1, "Content-Type": contentType})
		if w.Code >= 500 {
			t.Fatalf("status %d for %x: %s", w.Code, body, w.Body.String())
		}
	})
}

func FuzzRemoteWriteV1(f *testing.F) {
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("up", "job", "a"), Samples: []prompb.Sample{{Timestamp: 1, Value: 1}}, Exemplars: []prompb.Exemplar{{Labels: series("trace_id", "x")[1:], Value: 1, Timestamp: 1}}},
		{Labels: series("h"), Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 1}, PositiveSpans: []prompb.BucketSpan{{Length: 1}}, PositiveDeltas: []int64{1}, Timestamp: 2}}},
	}, Metadata: []prompb.MetricMetadata{{MetricFamilyName: "up", Type: prompb.MetricMetadata_GAUGE}}}
	b, _ := req.Marshal()
	fuzzHandler(f, "application/x-protobuf", b, []byte{}, []byte{0x0a, 0x00})
}

func FuzzRemoteWriteV2(f *testing.F) {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{{
		LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "up", "job", "a"), nil),
		Samples:    []writev2.Sample{{Value: 1, Timestamp: 1}},
		Histograms: []writev2.Histogram{writev2.FromFloatHistogram(0, 2, &histogram.FloatHistogram{Count: 1, Sum: 1})},
	}}}
	req.Symbols = st.Symbols()
	b, _ := req.Marshal()
	fuzzHandler(f, ctV2, b, []byte{}, []byte{0x22, 0x02, 0x08, 0x01})
}
