package promrw

import (
	"fmt"
	"math"
	"strings"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// The partial-acceptance corpus: remote-write requests (1.0 and 2.0) that
// exercise acceptance, partial acceptance and rejection. Every case runs on a
// fresh store: its setup requests first, then the request under test. The
// promdiff runner (promdiff_test.go, `make rw-diff`) records what Prometheus
// 3.16 answers to each in testdata/prometheus-3.16-partial.json;
// TestPartialAcceptanceMatchesPrometheus replays the corpus against the
// handler and checks fleetgate's answers against that file.
//
// Timestamps are milliseconds relative to the time the case runs (base), as
// Prometheus refuses samples more than 10 minutes ahead of its clock.

const (
	protoV1Name = "1.0"
	protoV2Name = "2.0"
)

// rwCase is one corpus entry.
type rwCase struct {
	name   string
	doc    string
	protos []string    // the protocols it runs with; both when empty
	setup  []rwRequest // sent first; must be accepted
	req    rwRequest
}

// rwRequest is one remote-write request, encoded for either protocol.
type rwRequest struct {
	series []rwSeries
	v1Meta []prompb.MetricMetadata // 1.0 only: the request's metadata entries

	mutateV2 func(*writev2.Request) // 2.0 only: break what the builder made valid
	// raw, when set, replaces the encoded body (after snappy).
	raw             func(encoded []byte) []byte
	contentType     string // overrides the protocol's Content-Type
	contentEncoding string // overrides "snappy"
}

type rwSeries struct {
	labels    []string // name, value, ... in the order sent: may be unsorted, repeated or invalid
	samples   []rwSample
	hists     []rwHist
	exemplars []rwExemplar
	meta      metadata.Metadata // 2.0: sent with the series
}

type rwSample struct {
	dt int64
	v  float64
}

type rwHist struct {
	dt int64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

type rwExemplar struct {
	labels []string
	v      float64
	dt     int64
}

func (c rwCase) protocols() []string {
	if len(c.protos) == 0 {
		return []string{protoV1Name, protoV2Name}
	}
	return c.protos
}

// id names one run of a case: "<proto>/<name>".
func caseID(proto, name string) string { return proto + "/" + name }

// encode builds the HTTP body and headers of r for proto at base.
func (r rwRequest) encode(proto string, base int64) (body []byte, contentType, contentEncoding string, err error) {
	var pb []byte
	if proto == protoV1Name {
		contentType = "application/x-protobuf;proto=prometheus.WriteRequest"
		pb, err = r.v1(base).Marshal()
	} else {
		contentType = ctV2
		req := r.v2(base)
		if r.mutateV2 != nil {
			r.mutateV2(req)
		}
		pb, err = req.Marshal()
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("encoding %s request: %w", proto, err)
	}
	body = snappy.Encode(nil, pb)
	if r.raw != nil {
		body = r.raw(body)
	}
	if r.contentType != "" {
		contentType = r.contentType
	}
	contentEncoding = "snappy"
	if r.contentEncoding != "" {
		contentEncoding = r.contentEncoding
	}
	return body, contentType, contentEncoding, nil
}

func pairsV1(kv []string) []prompb.Label {
	out := make([]prompb.Label, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func (r rwRequest) v1(base int64) *prompb.WriteRequest {
	req := &prompb.WriteRequest{Metadata: r.v1Meta}
	for _, s := range r.series {
		ts := prompb.TimeSeries{Labels: pairsV1(s.labels)}
		for _, sm := range s.samples {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: base + sm.dt, Value: sm.v})
		}
		for _, h := range s.hists {
			if h.fh != nil {
				ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(base+h.dt, h.fh))
			} else {
				ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(base+h.dt, h.h))
			}
		}
		for _, e := range s.exemplars {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Labels: pairsV1(e.labels), Value: e.v, Timestamp: base + e.dt})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	return req
}

func (r rwRequest) v2(base int64) *writev2.Request {
	st := writev2.NewSymbolTable()
	refs := func(kv []string) []uint32 {
		var out []uint32
		for _, s := range kv {
			out = append(out, st.Symbolize(s))
		}
		return out
	}
	req := &writev2.Request{}
	for _, s := range r.series {
		ts := writev2.TimeSeries{LabelsRefs: refs(s.labels)}
		for _, sm := range s.samples {
			ts.Samples = append(ts.Samples, writev2.Sample{Timestamp: base + sm.dt, Value: sm.v})
		}
		for _, h := range s.hists {
			if h.fh != nil {
				ts.Histograms = append(ts.Histograms, writev2.FromFloatHistogram(0, base+h.dt, h.fh))
			} else {
				ts.Histograms = append(ts.Histograms, writev2.FromIntHistogram(0, base+h.dt, h.h))
			}
		}
		for _, e := range s.exemplars {
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{LabelsRefs: refs(e.labels), Value: e.v, Timestamp: base + e.dt})
		}
		if s.meta.Type != "" {
			ts.Metadata.Type = writev2.FromMetadataType(s.meta.Type)
		}
		if s.meta.Help != "" {
			ts.Metadata.HelpRef = st.Symbolize(s.meta.Help)
		}
		if s.meta.Unit != "" {
			ts.Metadata.UnitRef = st.Symbolize(s.meta.Unit)
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	return req
}

// Building blocks of the corpus.

func float(name string, extra []string, pts ...rwSample) rwSeries {
	return rwSeries{labels: append([]string{"__name__", name}, extra...), samples: pts}
}

func pt(dt int64, v float64) rwSample { return rwSample{dt: dt, v: v} }

// validHist is an integer histogram with 5 observations.
func validHist() *histogram.Histogram {
	return &histogram.Histogram{
		Count: 5, Sum: 10, Schema: 0, ZeroThreshold: 0.001, ZeroCount: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, 0},
	}
}

func validFloatHist() *histogram.FloatHistogram {
	return &histogram.FloatHistogram{
		Count: 3, Sum: 4.5, Schema: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{3},
	}
}

var (
	noLabels  []string
	traceA    = []string{"trace_id", "a"}
	traceB    = []string{"trace_id", "b"}
	setupRWDA = rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1))}}
)

const (
	sec  = int64(1000)
	hour = 3600 * sec
)

// partialCorpus is the corpus. Names are stable: they key the golden file and
// the list of intentional differences.
var partialCorpus = []rwCase{
	{
		name: "all_valid", doc: "two series, floats and an exemplar: everything is written",
		req: rwRequest{series: []rwSeries{
			float("rwd_a", []string{"job", "x"}, pt(0, 1), pt(15*sec, 2), pt(30*sec, 3)),
			{labels: []string{"__name__", "rwd_b"}, samples: []rwSample{pt(0, 10), pt(15*sec, 11)}, exemplars: []rwExemplar{{traceA, 11, 15 * sec}}},
		}},
	},
	{
		name: "empty_request", doc: "a request without series",
		req: rwRequest{},
	},
	{
		name: "metadata_only_request", doc: "1.0: only metric metadata, no series", protos: []string{protoV1Name},
		req: rwRequest{v1Meta: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "rwd_a", Help: "A counter."}}},
	},
	{
		name: "ooo_sample_among_valid", doc: "one out-of-order sample between valid ones, and a valid second series",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			float("rwd_a", noLabels, pt(15*sec, 2), pt(-30*sec, 3), pt(30*sec, 4)),
			float("rwd_b", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "duplicate_sample", doc: "a sample at an already written timestamp with another value",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			float("rwd_a", noLabels, pt(0, 2)),
			float("rwd_b", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "same_sample_resent", doc: "a sample at an already written timestamp with the same value",
		setup: []rwRequest{setupRWDA},
		req:   rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1), pt(15*sec, 2))}},
	},
	{
		name: "too_old_sample", doc: "a sample 2h older than the newest one (outside the head's appendable window)",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			float("rwd_b", noLabels, pt(-2*hour, 1)),
			float("rwd_c", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "far_future_sample", doc: "a sample 1h ahead of the receiver's clock next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_a", noLabels, pt(hour, 1)),
			float("rwd_b", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "samples_unsorted_in_series", doc: "one new series whose samples go back in time within the request",
		req: rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(20*sec, 1), pt(10*sec, 2), pt(30*sec, 3))}},
	},
	{
		name: "stale_marker", doc: "a staleness marker after a sample",
		req: rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1), pt(15*sec, math.Float64frombits(value.StaleNaN)))}},
	},
	{
		name: "no_metric_name", doc: "a series without __name__ next to a valid one",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"job", "x"}, samples: []rwSample{pt(0, 1)}},
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "empty_metric_name", doc: `__name__="" next to a valid series`,
		req: rwRequest{series: []rwSeries{
			float("", []string{"job", "x"}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "empty_label_set", doc: "a series without any label next to a valid one",
		req: rwRequest{series: []rwSeries{
			{samples: []rwSample{pt(0, 1)}},
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "invalid_utf8_label_value", doc: "a label value that is not UTF-8 next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_x", []string{"v", "\xff\xfe"}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "invalid_utf8_label_name", doc: "a label name that is not UTF-8 next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_x", []string{"\xff", "v"}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "empty_label_name", doc: `a label named "" next to a valid series`,
		req: rwRequest{series: []rwSeries{
			float("rwd_x", []string{"", "v"}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "utf8_names", doc: "UTF-8 metric and label names (valid under UTF-8 validation)",
		req: rwRequest{series: []rwSeries{float("rwd.ü.total", []string{"könig.name", "ä"}, pt(0, 1))}},
	},
	{
		name: "empty_label_value", doc: `a label with an empty value (the same as no label)`,
		req: rwRequest{series: []rwSeries{float("rwd_a", []string{"job", ""}, pt(0, 1))}},
	},
	{
		name: "duplicate_label_names", doc: "a series with the label job twice next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_x", []string{"job", "a", "job", "b"}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "unsorted_labels", doc: "labels not sorted by name",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"zone", "z", "__name__", "rwd_a", "app", "a"}, samples: []rwSample{pt(0, 1)}},
		}},
	},
	{
		name: "series_without_samples", doc: "a series with labels only next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_x", noLabels),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "metadata_only_series", doc: "2.0: a series with metadata but no samples next to a valid series", protos: []string{protoV2Name},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_x"}, meta: metadata.Metadata{Type: "counter", Help: "Only metadata."}},
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1)}, meta: metadata.Metadata{Type: "gauge", Help: "A gauge.", Unit: "seconds"}},
		}},
	},
	{
		name: "histograms_valid", doc: "an integer and a float native histogram",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: 0, h: validHist()}}},
			{labels: []string{"__name__", "rwd_fh"}, hists: []rwHist{{dt: 0, fh: validFloatHist()}}},
		}},
	},
	{
		name: "histogram_count_too_small", doc: "a native histogram whose count is below its buckets' sum, next to a valid series",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: 0, h: func() *histogram.Histogram { h := validHist(); h.Count = 2; return h }()}}},
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "histogram_negative_count", doc: "a float native histogram with a negative count, next to a valid series",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_fh"}, hists: []rwHist{{dt: 0, fh: &histogram.FloatHistogram{Count: -1, Sum: 1}}}},
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "histogram_custom_bounds_unsorted", doc: "a custom-buckets histogram whose bounds decrease, next to a valid series",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: 0, h: &histogram.Histogram{
				Count: 3, Sum: 3, Schema: histogram.CustomBucketsSchema, CustomValues: []float64{2, 1},
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []int64{1, 0, 0},
			}}}},
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "histogram_reserved_schema", doc: "a native histogram with schema 9 (reserved: reduced to 8 by the receiver)",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: 0, h: &histogram.Histogram{
				Count: 4, Sum: 4, Schema: 9,
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, 0},
			}}}},
		}},
	},
	{
		name: "histogram_unknown_schema", doc: "a native histogram with schema 60 (unknown), next to a valid series",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: 0, h: &histogram.Histogram{Count: 1, Sum: 1, Schema: 60, ZeroCount: 1}}}},
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "histogram_ooo", doc: "a native histogram older than the series' newest, next to a valid one",
		setup: []rwRequest{{series: []rwSeries{{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: 0, h: validHist()}}}}}},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_h"}, hists: []rwHist{{dt: -30 * sec, h: validHist()}, {dt: 15 * sec, h: validHist()}}},
		}},
	},
	{
		name: "exemplar_ooo", doc: "an exemplar older than the series' newest exemplar, on a valid sample",
		setup: []rwRequest{{series: []rwSeries{{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1)}, exemplars: []rwExemplar{{traceA, 1, 0}}}}}},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(15*sec, 2)}, exemplars: []rwExemplar{{traceB, 2, -30 * sec}}},
		}},
	},
	{
		name: "exemplar_duplicate", doc: "the series' newest exemplar sent again",
		setup: []rwRequest{{series: []rwSeries{{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1)}, exemplars: []rwExemplar{{traceA, 1, 0}}}}}},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(15*sec, 2)}, exemplars: []rwExemplar{{traceA, 1, 0}}},
		}},
	},
	{
		name: "exemplar_labels_too_long", doc: "an exemplar whose labels exceed 128 UTF-8 characters, on a valid sample",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1)}, exemplars: []rwExemplar{{[]string{"trace_id", strings.Repeat("x", 200)}, 1, 0}}},
		}},
	},
	{
		name: "exemplar_far_future", doc: "an exemplar 1h ahead on a valid sample",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1)}, exemplars: []rwExemplar{{traceA, 1, hour}}},
		}},
	},
	{
		name: "exemplars_unsorted", doc: "two exemplars of one series sent newest first",
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1), pt(15*sec, 2)}, exemplars: []rwExemplar{{traceB, 2, 15 * sec}, {traceA, 1, 0}}},
		}},
	},
	{
		name: "exemplar_on_rejected_sample", doc: "an exemplar on a series whose only sample is out of order",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(-30*sec, 2)}, exemplars: []rwExemplar{{traceA, 2, 5 * sec}}},
		}},
	},
	{
		name: "exemplar_only_series", doc: "a series that carries only an exemplar (1.0 senders send exemplars so) for a series written before, next to a valid series",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_a"}, exemplars: []rwExemplar{{traceA, 1, 5 * sec}}},
			float("rwd_b", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "exemplar_only_unknown_series", doc: "a series that carries only an exemplar for a series never written, next to a valid series",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			{labels: []string{"__name__", "rwd_x"}, exemplars: []rwExemplar{{traceA, 1, 5 * sec}}},
			float("rwd_b", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "exemplar_bad_refs", doc: "2.0: an exemplar whose label references are outside the symbols, on a valid sample", protos: []string{protoV2Name},
		req: rwRequest{
			series: []rwSeries{{labels: []string{"__name__", "rwd_a"}, samples: []rwSample{pt(0, 1)}, exemplars: []rwExemplar{{traceA, 1, 0}}}},
			mutateV2: func(r *writev2.Request) {
				r.Timeseries[0].Exemplars[0].LabelsRefs = []uint32{1, 99}
			},
		},
	},
	{
		name: "mixed_valid_invalid", doc: "valid, nameless, out-of-order, duplicate-label and valid series in one request",
		setup: []rwRequest{setupRWDA},
		req: rwRequest{series: []rwSeries{
			float("rwd_b", noLabels, pt(0, 1), pt(15*sec, 2)),
			{labels: []string{"job", "x"}, samples: []rwSample{pt(0, 1)}},
			float("rwd_a", noLabels, pt(-30*sec, 2)),
			float("rwd_x", []string{"job", "a", "job", "b"}, pt(0, 1)),
			float("rwd_c", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "all_samples_rejected", doc: "every sample of the request is out of order",
		setup: []rwRequest{{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1)), float("rwd_b", noLabels, pt(0, 1))}}},
		req: rwRequest{series: []rwSeries{
			float("rwd_a", noLabels, pt(-30*sec, 2)),
			float("rwd_b", noLabels, pt(-15*sec, 2), pt(-10*sec, 3)),
		}},
	},
	{
		name: "bad_symbol_refs", doc: "2.0: label references outside the symbols table, next to a valid series", protos: []string{protoV2Name},
		req: rwRequest{
			series:   []rwSeries{float("rwd_x", noLabels, pt(0, 1)), float("rwd_a", noLabels, pt(0, 1))},
			mutateV2: func(r *writev2.Request) { r.Timeseries[0].LabelsRefs = []uint32{1, 99} },
		},
	},
	{
		name: "odd_label_refs", doc: "2.0: an odd number of label references, next to a valid series", protos: []string{protoV2Name},
		req: rwRequest{
			series:   []rwSeries{float("rwd_x", noLabels, pt(0, 1)), float("rwd_a", noLabels, pt(0, 1))},
			mutateV2: func(r *writev2.Request) { r.Timeseries[0].LabelsRefs = r.Timeseries[0].LabelsRefs[:1] },
		},
	},
	{
		name: "bad_metadata_refs", doc: "2.0: a help reference outside the symbols table, next to a valid series", protos: []string{protoV2Name},
		req: rwRequest{
			series:   []rwSeries{float("rwd_x", noLabels, pt(0, 1)), float("rwd_a", noLabels, pt(0, 1))},
			mutateV2: func(r *writev2.Request) { r.Timeseries[0].Metadata.HelpRef = 99 },
		},
	},
	{
		name: "first_symbol_not_empty", doc: `2.0: symbols[0] is not "" (the spec requires it)`, protos: []string{protoV2Name},
		req: rwRequest{
			series: []rwSeries{float("rwd_a", noLabels, pt(0, 1))},
			mutateV2: func(r *writev2.Request) {
				r.Symbols = append([]string{"x"}, r.Symbols[1:]...)
			},
		},
	},
	{
		name: "too_many_labels", doc: "a series with 70 labels next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_x", func() []string {
				var kv []string
				for i := range 69 {
					kv = append(kv, fmt.Sprintf("l%02d", i), "v")
				}
				return kv
			}(), pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "label_value_too_long", doc: "a label value of 5000 bytes next to a valid series",
		req: rwRequest{series: []rwSeries{
			float("rwd_x", []string{"v", strings.Repeat("x", 5000)}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "other_cluster_label", doc: `a series labelled cluster="other" (not the sender's cluster) next to a valid series`,
		req: rwRequest{series: []rwSeries{
			float("rwd_x", []string{"cluster", "other"}, pt(0, 1)),
			float("rwd_a", noLabels, pt(0, 1)),
		}},
	},
	{
		name: "malformed_protobuf", doc: "snappy-compressed bytes that are not a protobuf message",
		req: rwRequest{raw: func([]byte) []byte { return snappy.Encode(nil, []byte{0xff, 0xff, 0xff, 0xff}) }},
	},
	{
		name: "not_snappy", doc: "a body that is not snappy-compressed",
		req: rwRequest{raw: func([]byte) []byte { return []byte("this is not snappy at all") }},
	},
	{
		name: "snappy_claims_huge", doc: "a snappy header announcing 100 MiB of decoded data",
		req: rwRequest{raw: func([]byte) []byte {
			b := []byte{}
			for n := uint64(100 << 20); ; n >>= 7 {
				if n < 0x80 {
					b = append(b, byte(n))
					break
				}
				b = append(b, byte(n)|0x80)
			}
			return append(b, 0, 0, 0, 0)
		}},
	},
	{
		name: "content_type_json", doc: "Content-Type application/json", protos: []string{protoV1Name},
		req: rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1))}, contentType: "application/json"},
	},
	{
		name: "unknown_proto", doc: "Content-Type application/x-protobuf;proto=foo.Bar", protos: []string{protoV1Name},
		req: rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1))}, contentType: "application/x-protobuf;proto=foo.Bar"},
	},
	{
		name: "gzip_encoding", doc: "Content-Encoding gzip", protos: []string{protoV1Name},
		req: rwRequest{series: []rwSeries{float("rwd_a", noLabels, pt(0, 1))}, contentEncoding: "gzip"},
	},
}
