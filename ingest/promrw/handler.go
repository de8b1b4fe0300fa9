// Package promrw receives Prometheus remote-write 1.0 and 2.0.
package promrw

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// Config of the remote-write receiver.
type Config struct {
	// MaxRequestBytes bounds the compressed body; MaxDecodedBytes the
	// snappy-decoded message. Larger requests get 413.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	MaxDecodedBytes int `yaml:"max_decoded_bytes"`
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	if c.MaxRequestBytes < 0 {
		return fmt.Errorf("max_request_bytes: must not be negative, got %d", c.MaxRequestBytes)
	}
	if c.MaxDecodedBytes < 0 {
		return fmt.Errorf("max_decoded_bytes: must not be negative, got %d", c.MaxDecodedBytes)
	}
	return nil
}

const (
	defaultMaxRequestBytes = 16 << 20
	defaultMaxDecodedBytes = 64 << 20

	// Header names of the remote-write 2.0 spec.
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
	headerVersion           = "X-Prometheus-Remote-Write-Version"

	protoV1 = "prometheus.WriteRequest"
	protoV2 = "io.prometheus.write.v2.Request"

	maxErrorBody = 16 << 10
)

// Handler serves POST /api/v1/write.
type Handler struct {
	cfg      Config
	pipe     *pipeline.Pipeline
	logger   *slog.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	bufPool sync.Pool // *[]byte
	v1Pool  sync.Pool // *prompb.WriteRequest
	v2Pool  sync.Pool // *writev2.Request
	sPool   sync.Pool // *decodeState
}

type decodeState struct {
	series pipeline.Series
	sb     labels.ScratchBuilder
	ls     labels.Labels // series labels, rebuilt in place for every series
	ids    [][]byte      // 1.0: encoded labels of each series, from decodeV1
	id     []byte        // 2.0: the current series' labels and metadata, resolved

	// The series SeriesLabels builds: a 1.0 one, or 2.0 references.
	cur     *prompb.TimeSeries
	refs    []uint32
	symbols []string
}

// SeriesLabels implements pipeline.LabelSource for the current series, whose
// label references (2.0) were checked already.
func (st *decodeState) SeriesLabels() labels.Labels {
	if st.cur != nil {
		return st.labelsV1(st.cur.Labels)
	}
	ls, _ := st.labelsV2(st.refs, st.symbols)
	return ls
}

// checkRefs fails like writev2's TimeSeries.ToLabels on bad references.
func checkRefs(refs []uint32, symbols []string) error {
	if len(refs)%2 != 0 {
		return fmt.Errorf("invalid labelRefs length %d", len(refs))
	}
	for i := 0; i < len(refs); i += 2 {
		if int(refs[i]) >= len(symbols) || int(refs[i+1]) >= len(symbols) {
			return fmt.Errorf("labelRefs %d (name) = %d (value) outside of symbols table (size %d)", refs[i], refs[i+1], len(symbols))
		}
	}
	return nil
}

// idV2 encodes a 2.0 series' resolved labels and metadata, length-prefixed,
// into st.id: the series identity for the pipeline's series cache.
func (st *decodeState) idV2(refs []uint32, symbols []string, md metadata.Metadata) []byte {
	b := st.id[:0]
	for _, r := range refs {
		b = binary.AppendUvarint(b, uint64(len(symbols[r])))
		b = append(b, symbols[r]...)
	}
	b = append(b, 0xff)
	for _, v := range [...]string{string(md.Type), md.Help, md.Unit} {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	st.id = b
	return b
}

// labelsV1 builds the sorted labels of a 1.0 series into st's reused buffer.
func (st *decodeState) labelsV1(pairs []prompb.Label) labels.Labels {
	st.sb.Reset()
	for _, l := range pairs {
		st.sb.Add(l.Name, l.Value)
	}
	st.sb.Sort()
	st.sb.Overwrite(&st.ls)
	return st.ls
}

// labelsV2 is labelsV1 for 2.0 label references; it fails like writev2's
// TimeSeries.ToLabels.
func (st *decodeState) labelsV2(refs []uint32, symbols []string) (labels.Labels, error) {
	if len(refs)%2 != 0 {
		return labels.EmptyLabels(), fmt.Errorf("invalid labelRefs length %d", len(refs))
	}
	st.sb.Reset()
	for i := 0; i < len(refs); i += 2 {
		nameRef, valueRef := refs[i], refs[i+1]
		if int(nameRef) >= len(symbols) || int(valueRef) >= len(symbols) {
			return labels.EmptyLabels(), fmt.Errorf("labelRefs %d (name) = %d (value) outside of symbols table (size %d)", nameRef, valueRef, len(symbols))
		}
		st.sb.Add(symbols[nameRef], symbols[valueRef])
	}
	st.sb.Sort()
	st.sb.Overwrite(&st.ls)
	return st.ls, nil
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{MaxRequestBytes: defaultMaxRequestBytes, MaxDecodedBytes: defaultMaxDecodedBytes}
}

// NewHandler builds the receiver. r may be nil.
func NewHandler(cfg Config, p *pipeline.Pipeline, r prometheus.Registerer, logger *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultConfig().MaxRequestBytes
	}
	if cfg.MaxDecodedBytes == 0 {
		cfg.MaxDecodedBytes = DefaultConfig().MaxDecodedBytes
	}
	h := &Handler{
		cfg: cfg, pipe: p, logger: logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_remote_write_requests_total",
			Help: "Remote-write requests by protocol version and HTTP status code.",
		}, []string{"version", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                        "fleetgate_remote_write_request_duration_seconds",
			Help:                        "Remote-write request latency, from first byte to response.",
			Buckets:                     prometheus.ExponentialBuckets(0.0005, 4, 9),
			NativeHistogramBucketFactor: 1.1,
		}, []string{"version"}),
	}
	h.v1Pool.New = func() any { return &prompb.WriteRequest{} }
	h.v2Pool.New = func() any { return &writev2.Request{} }
	h.sPool.New = func() any { return &decodeState{sb: labels.NewScratchBuilder(16)} }
	if r != nil {
		for _, c := range []prometheus.Collector{h.requests, h.duration} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering remote-write metrics: %w", err)
			}
		}
	}
	return h, nil
}

// errorf is the answer to a request that fails: its status and the
// *core.Error ServeHTTP maps to it.
func errorf(status int, format string, args ...any) (int, error) {
	return status, core.Errorf(status, "invalid", format, args...)
}

// parseContentType returns the protobuf message the Content-Type asks for.
func parseContentType(ct string) (string, error) {
	if ct == "" {
		return protoV1, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", fmt.Errorf("Content-Type %q: %w", ct, err)
	}
	if mt != "application/x-protobuf" {
		return "", fmt.Errorf("Content-Type %q is not supported; use application/x-protobuf", ct)
	}
	switch p := params["proto"]; p {
	case "", protoV1:
		return protoV1, nil
	case protoV2:
		return protoV2, nil
	default:
		return "", fmt.Errorf("Content-Type proto=%q is not supported; use %s or %s", p, protoV1, protoV2)
	}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	version := "1.0"
	status, err := h.serve(w, r, &version)
	if err != nil {
		status = core.ErrorStatus(err)
		if status >= 500 {
			h.logger.Error("remote-write failed", "err", err, "status", status)
		} else {
			h.logger.Debug("remote-write rejected", "err", err, "status", status)
		}
		if d := core.ErrorRetryAfter(err); d > 0 {
			w.Header().Set("Retry-After", core.RetryAfter(d))
		}
		// Messages are capped where they are made; this bounds their sum.
		http.Error(w, core.Truncate(err.Error(), maxErrorBody), status)
	} else {
		w.WriteHeader(status)
	}
	h.requests.WithLabelValues(version, strconv.Itoa(status)).Inc()
	h.duration.WithLabelValues(version).Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, version *string) (int, error) {
	msg, err := parseContentType(r.Header.Get("Content-Type"))
	if err != nil {
		return errorf(http.StatusUnsupportedMediaType, "%w", err)
	}
	if msg == protoV2 {
		*version = "2.0"
	}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "snappy":
	default:
		return errorf(http.StatusUnsupportedMediaType, "Content-Encoding %q is not supported; use snappy", enc)
	}
	cluster, err := h.pipe.Registry().Identify(fleet.CredentialFromHTTP(r))
	if err != nil {
		return errorf(http.StatusUnauthorized, "%w", err)
	}
	// A cluster at its in-flight or rate limit is refused before its body
	// is read or decoded.
	if err := h.pipe.Limiter().Admit(cluster, core.BudgetSamples); err != nil {
		return core.ErrorStatus(err), err
	}
	defer h.pipe.Limiter().Done(cluster)
	bufp, _ := h.bufPool.Get().(*[]byte)
	if bufp == nil {
		b := make([]byte, 0, 64<<10)
		bufp = &b
	}
	defer h.bufPool.Put(bufp)
	compressed, err := core.ReadBody(r, (*bufp)[:0], core.BodyLimits{MaxBytes: h.cfg.MaxRequestBytes, Key: "remote_write.max_request_bytes"})
	if err != nil {
		return core.ErrorStatus(err), err
	}
	*bufp = compressed
	n, err := snappy.DecodedLen(compressed)
	if err != nil {
		return errorf(http.StatusBadRequest, "body is not snappy-compressed: %w", err)
	}
	if n > h.cfg.MaxDecodedBytes {
		return errorf(http.StatusRequestEntityTooLarge, "decoded body of %d bytes is larger than remote_write.max_decoded_bytes (%d)", n, h.cfg.MaxDecodedBytes)
	}
	decp, _ := h.bufPool.Get().(*[]byte)
	if decp == nil {
		b := make([]byte, 0, n)
		decp = &b
	}
	defer h.bufPool.Put(decp)
	if cap(*decp) < n {
		*decp = make([]byte, 0, n)
	}
	decoded, err := snappy.Decode((*decp)[:n], compressed)
	if err != nil {
		return errorf(http.StatusBadRequest, "body is not valid snappy: %w", err)
	}
	st := h.sPool.Get().(*decodeState)
	defer h.sPool.Put(st)
	if msg == protoV2 {
		return h.writeV2(w, r, cluster, decoded, st)
	}
	return h.writeV1(w, r, cluster, decoded, st)
}

func (h *Handler) writeV1(w http.ResponseWriter, r *http.Request, cluster *fleet.Cluster, body []byte, st *decodeState) (int, error) {
	req := h.v1Pool.Get().(*prompb.WriteRequest)
	defer func() {
		req.Timeseries = req.Timeseries[:0]
		req.Metadata = req.Metadata[:0]
		h.v1Pool.Put(req)
	}()
	req.Timeseries = req.Timeseries[:0]
	req.Metadata = req.Metadata[:0]
	if err := decodeV1(req, &st.ids, body); err != nil {
		return errorf(http.StatusBadRequest, "decoding remote-write 1.0 request: %w", err)
	}
	if max := h.pipe.MaxSeriesPerRequest(); len(req.Timeseries) > max {
		return errorf(http.StatusRequestEntityTooLarge, "request has %d series, more than ingest.max_series_per_request (%d)", len(req.Timeseries), max)
	}
	n := 0
	for i := range req.Timeseries {
		n += len(req.Timeseries[i].Samples) + len(req.Timeseries[i].Histograms)
	}
	if err := h.pipe.Limiter().TakeSamples(cluster, n); err != nil {
		return core.ErrorStatus(err), err
	}
	batch := h.pipe.Begin(r.Context(), cluster)
	s := &st.series
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 && len(ts.Exemplars) == 0 {
			continue // nothing to write: Prometheus's 1.0 receiver skips it too
		}
		s.Reset()
		// Labels are built only if the pipeline does not know the series.
		st.cur, s.ID, s.Source = ts, st.ids[i], st
		for _, sm := range ts.Samples {
			s.Samples = append(s.Samples, pipeline.Sample{T: sm.Timestamp, V: sm.Value})
		}
		for _, hp := range ts.Histograms {
			if hp.IsFloatHistogram() {
				s.Histograms = append(s.Histograms, pipeline.HistogramSample{T: hp.Timestamp, FH: reduceFloatSchema(hp.ToFloatHistogram())})
			} else {
				s.Histograms = append(s.Histograms, pipeline.HistogramSample{T: hp.Timestamp, H: reduceSchema(hp.ToIntHistogram())})
			}
		}
		for _, e := range ts.Exemplars {
			s.Exemplars = append(s.Exemplars, e.ToExemplar(&st.sb, nil))
		}
		if err := batch.Add(s); err != nil {
			return core.ErrorStatus(err), err
		}
	}
	if ms := h.pipe.MetadataSink(); ms != nil && len(req.Metadata) > 0 {
		for _, m := range req.Metadata {
			name := cluster
			if name == nil {
				name = h.pipe.Registry().Dev("")
			}
			ms.SetMetadata(name.Name, m.MetricFamilyName, metadata.Metadata{
				Type: metricTypeV1(m.Type), Help: m.Help, Unit: m.Unit,
			})
		}
	}
	_, err := batch.Commit()
	w.Header().Set(headerVersion, "0.1.0")
	if err != nil {
		return core.ErrorStatus(err), err
	}
	return http.StatusNoContent, nil
}

// metricTypeV1 maps the 1.0 enum to Prometheus's metric type names, as
// Prometheus's own receiver does (COUNTER -> counter, GAUGEHISTOGRAM -> gaugehistogram).
func metricTypeV1(t prompb.MetricMetadata_MetricType) model.MetricType {
	return model.MetricType(strings.ToLower(t.String()))
}

func (h *Handler) writeV2(w http.ResponseWriter, r *http.Request, cluster *fleet.Cluster, body []byte, st *decodeState) (int, error) {
	req := h.v2Pool.Get().(*writev2.Request)
	defer func() {
		req.Symbols = req.Symbols[:0]
		req.Timeseries = req.Timeseries[:0]
		h.v2Pool.Put(req)
	}()
	req.Symbols = req.Symbols[:0]
	req.Timeseries = req.Timeseries[:0]
	w.Header().Set(headerVersion, "2.0.0")
	setWritten := func(wr pipeline.Written) {
		w.Header().Set(headerSamplesWritten, strconv.Itoa(wr.Samples))
		w.Header().Set(headerHistogramsWritten, strconv.Itoa(wr.Histograms))
		w.Header().Set(headerExemplarsWritten, strconv.Itoa(wr.Exemplars))
	}
	setWritten(pipeline.Written{})
	if err := decodeV2(req, body); err != nil {
		return errorf(http.StatusBadRequest, "decoding remote-write 2.0 request: %w", err)
	}
	if max := h.pipe.MaxSeriesPerRequest(); len(req.Timeseries) > max {
		return errorf(http.StatusRequestEntityTooLarge, "request has %d series, more than ingest.max_series_per_request (%d)", len(req.Timeseries), max)
	}
	n := 0
	for i := range req.Timeseries {
		n += len(req.Timeseries[i].Samples) + len(req.Timeseries[i].Histograms)
	}
	if err := h.pipe.Limiter().TakeSamples(cluster, n); err != nil {
		return core.ErrorStatus(err), err
	}
	batch := h.pipe.Begin(r.Context(), cluster)
	s := &st.series
	var badSeries core.Problems
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		s.Reset()
		if err := checkRefs(ts.LabelsRefs, req.Symbols); err != nil {
			badSeries.Add(fmt.Errorf("series %d: label references: %w", i, err))
			continue
		}
		// Labels are built only if the pipeline does not know the series.
		st.cur, st.refs, st.symbols, s.Source = nil, ts.LabelsRefs, req.Symbols, st
		md, err := ts.ToMetadata(req.Symbols)
		if err != nil {
			badSeries.Add(fmt.Errorf("series %s: metadata: %w", core.Abbrev(st.SeriesLabels()), err))
			continue
		}
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 {
			// The 2.0 spec requires one; Prometheus's receiver answers 400.
			badSeries.Add(fmt.Errorf("series %s has no samples or histograms", core.Abbrev(st.SeriesLabels())))
			continue
		}
		s.ID = st.idV2(ts.LabelsRefs, req.Symbols, md)
		if md.Type != model.MetricTypeUnknown || md.Help != "" || md.Unit != "" {
			s.Metadata = md
		}
		for _, sm := range ts.Samples {
			s.Samples = append(s.Samples, pipeline.Sample{ST: sm.StartTimestamp, T: sm.Timestamp, V: sm.Value})
		}
		for _, hp := range ts.Histograms {
			if hp.IsFloatHistogram() {
				s.Histograms = append(s.Histograms, pipeline.HistogramSample{ST: hp.StartTimestamp, T: hp.Timestamp, FH: reduceFloatSchema(hp.ToFloatHistogram())})
			} else {
				s.Histograms = append(s.Histograms, pipeline.HistogramSample{ST: hp.StartTimestamp, T: hp.Timestamp, H: reduceSchema(hp.ToIntHistogram())})
			}
		}
		for _, e := range ts.Exemplars {
			ex, err := e.ToExemplar(&st.sb, req.Symbols)
			if err != nil {
				badSeries.Add(fmt.Errorf("series %s: exemplar: %w", core.Abbrev(st.SeriesLabels()), err))
				continue
			}
			s.Exemplars = append(s.Exemplars, ex)
		}
		if err := batch.Add(s); err != nil {
			return core.ErrorStatus(err), err
		}
	}
	written, err := batch.Commit()
	setWritten(written)
	if err != nil && core.ErrorStatus(err) != http.StatusBadRequest {
		return core.ErrorStatus(err), err
	}
	// Partial acceptance: what was valid is committed and counted in the
	// Written headers; the rest is a 400 naming it. Out-of-order exemplars
	// are a 400 too, as in Prometheus's 2.0 receiver (other refused
	// exemplars are only left out of the count).
	if ooo := batch.OutOfOrderExemplars(); ooo != nil {
		badSeries.Add(ooo)
	}
	if err != nil {
		if badSeries.Len() > 0 {
			return errorf(http.StatusBadRequest, "%w; %d series refused: %w", err, badSeries.Len(), badSeries.Err())
		}
		return http.StatusBadRequest, err
	}
	if badSeries.Len() > 0 {
		return errorf(http.StatusBadRequest, "%d series refused: %w", badSeries.Len(), badSeries.Err())
	}
	return http.StatusNoContent, nil
}

// reduceSchema reduces a histogram with a reserved exponential schema above
// the highest supported one (9 to 52) to that one, as Prometheus's receiver
// does; if it cannot, the histogram stays as sent and storage refuses it.
func reduceSchema(h *histogram.Histogram) *histogram.Histogram {
	if histogram.IsExponentialSchemaReserved(h.Schema) && h.Schema > histogram.ExponentialSchemaMax {
		if r := h.Copy(); r.ReduceResolution(histogram.ExponentialSchemaMax) == nil {
			return r
		}
	}
	return h
}

func reduceFloatSchema(h *histogram.FloatHistogram) *histogram.FloatHistogram {
	if histogram.IsExponentialSchemaReserved(h.Schema) && h.Schema > histogram.ExponentialSchemaMax {
		if r := h.Copy(); r.ReduceResolution(histogram.ExponentialSchemaMax) == nil {
			return r
		}
	}
	return h
}
