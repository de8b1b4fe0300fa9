// Package otlp receives OTLP metrics, logs and traces over gRPC and HTTP
// (protobuf and JSON, gzip) with the OpenTelemetry collector's pdata types.
// Metrics are translated to Prometheus series by Prometheus's own OTLP
// translator and go through the metrics pipeline; logs become Loki streams
// and traces go to the trace sinks, both through the logs-and-traces hub.
package otlp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/otlptranslator"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	prw "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

// Config of the OTLP receiver. The translation fields mirror Prometheus's
// `otlp` config block and mean the same.
type Config struct {
	// MaxRequestBytes bounds an HTTP body or gRPC message (default 16 MiB);
	// MaxDecodedBytes the gunzipped HTTP body (default 64 MiB).
	MaxRequestBytes int `yaml:"max_request_bytes"`
	MaxDecodedBytes int `yaml:"max_decoded_bytes"`

	PromoteAllResourceAttributes      bool     `yaml:"promote_all_resource_attributes"`
	PromoteResourceAttributes         []string `yaml:"promote_resource_attributes"`
	IgnoreResourceAttributes          []string `yaml:"ignore_resource_attributes"`
	TranslationStrategy               string   `yaml:"translation_strategy"`
	KeepIdentifyingResourceAttributes bool     `yaml:"keep_identifying_resource_attributes"`
	ConvertHistogramsToNHCB           bool     `yaml:"convert_histograms_to_nhcb"`
	PromoteScopeMetadata              bool     `yaml:"promote_scope_metadata"`
	// LogIndexAttributes are the resource attributes that become Loki stream
	// labels of OTLP logs (dots become underscores); the other attributes
	// become structured metadata. Default: Loki's own default list.
	LogIndexAttributes []string `yaml:"log_index_attributes"`
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
	if c.PromoteAllResourceAttributes && len(c.PromoteResourceAttributes) > 0 {
		return errors.New("promote_resource_attributes: cannot be set together with promote_all_resource_attributes")
	}
	if !c.PromoteAllResourceAttributes && len(c.IgnoreResourceAttributes) > 0 {
		return errors.New("ignore_resource_attributes: only valid with promote_all_resource_attributes")
	}
	if _, err := c.strategy(); err != nil {
		return err
	}
	return nil
}

func (c *Config) strategy() (otlptranslator.TranslationStrategyOption, error) {
	if c.TranslationStrategy == "" {
		return otlptranslator.UnderscoreEscapingWithSuffixes, nil
	}
	for _, s := range []otlptranslator.TranslationStrategyOption{
		otlptranslator.UnderscoreEscapingWithSuffixes, otlptranslator.UnderscoreEscapingWithoutSuffixes,
		otlptranslator.NoUTF8EscapingWithSuffixes, otlptranslator.NoTranslation,
	} {
		if string(s) == c.TranslationStrategy {
			return s, nil
		}
	}
	return "", fmt.Errorf("translation_strategy: %q is not one of UnderscoreEscapingWithSuffixes, UnderscoreEscapingWithoutSuffixes, NoUTF8EscapingWithSuffixes, NoTranslation", c.TranslationStrategy)
}

// defaultLogIndexAttributes is Loki's default list of resource attributes
// indexed as stream labels for OTLP logs.
var defaultLogIndexAttributes = []string{
	"cloud.availability_zone", "cloud.region", "container.name", "deployment.environment", "deployment.environment.name",
	"k8s.cluster.name", "k8s.container.name", "k8s.cronjob.name", "k8s.daemonset.name", "k8s.deployment.name",
	"k8s.job.name", "k8s.namespace.name", "k8s.pod.name", "k8s.replicaset.name", "k8s.statefulset.name",
	"service.instance.id", "service.name", "service.namespace", "cluster",
}

// Receiver handles all three OTLP signals. Safe for concurrent use.
type Receiver struct {
	cfg      Config
	pipe     *pipeline.Pipeline
	sig      *logtrace.Hub
	settings prw.Settings
	logIdx   map[string]string // attribute -> label
	logger   *slog.Logger

	convPool sync.Pool

	requests *prometheus.CounterVec
	items    *prometheus.CounterVec
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{MaxRequestBytes: 16 << 20, MaxDecodedBytes: 64 << 20}
}

// New builds the receiver. r may be nil.
func New(cfg Config, pipe *pipeline.Pipeline, sig *logtrace.Hub, r prometheus.Registerer, logger *slog.Logger) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultConfig().MaxRequestBytes
	}
	if cfg.MaxDecodedBytes == 0 {
		cfg.MaxDecodedBytes = DefaultConfig().MaxDecodedBytes
	}
	strategy, _ := cfg.strategy()
	promote := cfg.PromoteResourceAttributes
	if !cfg.PromoteAllResourceAttributes {
		// The cluster identity is always a label, so dev-mode identity and
		// conflict checks work the same as for remote-write.
		promote = append(append([]string(nil), promote...), logtrace.AttrCluster)
	}
	pcfg := config.OTLPConfig{
		PromoteAllResourceAttributes: cfg.PromoteAllResourceAttributes,
		PromoteResourceAttributes:    promote,
		IgnoreResourceAttributes:     cfg.IgnoreResourceAttributes,
	}
	rc := &Receiver{cfg: cfg, pipe: pipe, sig: sig, logger: logger,
		settings: prw.Settings{
			AddMetricSuffixes:                 strategy.ShouldAddSuffixes(),
			AllowUTF8:                         !strategy.ShouldEscape(),
			PromoteResourceAttributes:         prw.NewPromoteResourceAttributes(pcfg),
			KeepIdentifyingResourceAttributes: cfg.KeepIdentifyingResourceAttributes,
			ConvertHistogramsToNHCB:           cfg.ConvertHistogramsToNHCB,
			PromoteScopeMetadata:              cfg.PromoteScopeMetadata,
			LookbackDelta:                     5 * time.Minute,
		},
		logIdx: map[string]string{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_otlp_requests_total", Help: "OTLP export requests by signal, transport and outcome.",
		}, []string{"signal", "transport", "outcome"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_otlp_items_total", Help: "OTLP data points, log records and spans received, by signal and outcome.",
		}, []string{"signal", "outcome"}),
	}
	idx := cfg.LogIndexAttributes
	if len(idx) == 0 {
		idx = defaultLogIndexAttributes
	}
	for _, a := range idx {
		rc.logIdx[a] = sanitizeLabel(a)
	}
	rc.convPool.New = func() any { return prw.NewPrometheusConverter(nil) }
	if r != nil {
		for _, c := range []prometheus.Collector{rc.requests, rc.items} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering OTLP metrics: %w", err)
			}
		}
	}
	return rc, nil
}

// Result of one export: what was rejected of an accepted request.
type Result struct {
	Rejected int64
	Message  string
}

// statusOf is the HTTP status of a failed export (a *core.Error's, else
// 503: storage failures are transient, the sender should retry); Retryable
// follows the OTLP spec (429, 502, 503, 504 are retryable, other 4xx/5xx
// are not).
func statusOf(err error) int {
	s := core.ErrorStatus(err)
	if s == http.StatusInternalServerError {
		// Storage failures are transient: ask the sender to retry.
		return http.StatusServiceUnavailable
	}
	return s
}

func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// ExportMetrics checks attribute counts and identity, stamps identity on
// every resource, translates the metrics with Prometheus's translator and
// commits them through the pipeline. c is the credential's cluster (nil:
// dev mode). Every data point counts as one sample against the cluster's
// ingestion rate.
func (rc *Receiver) ExportMetrics(ctx context.Context, c *fleet.Cluster, md pmetric.Metrics) (Result, error) {
	if err := rc.stampMetrics(c, md); err != nil {
		rc.items.WithLabelValues("metrics", "rejected").Add(float64(md.DataPointCount()))
		return Result{}, rc.rejected(c, md.DataPointCount(), err)
	}
	if err := rc.pipe.Limiter().TakeSamples(c, md.DataPointCount()); err != nil {
		rc.items.WithLabelValues("metrics", "rejected").Add(float64(md.DataPointCount()))
		return Result{}, err
	}
	batch := rc.pipe.Begin(ctx, c)
	app := &batchAppender{b: batch}
	conv := rc.convPool.Get().(*prw.PrometheusConverter)
	conv.Reset(app)
	annots, terr := conv.FromMetrics(ctx, md, rc.settings)
	conv.Reset(nil)
	rc.convPool.Put(conv)
	if app.err != nil {
		batch.Abort()
		return Result{}, app.err
	}
	if ws, _ := annots.AsStrings("", 0, 0); len(ws) > 0 {
		rc.logger.Debug("OTLP translation warnings", "warnings", ws)
	}
	rejected := batch.Rejected()
	_, err := batch.Commit()
	var res Result
	if err != nil {
		if core.ErrorStatus(err) != http.StatusBadRequest {
			return Result{}, err
		}
		// Some series were invalid; the rest is committed: partial success.
		res = Result{Rejected: int64(rejected), Message: err.Error()}
	}
	if terr != nil {
		// Metrics the translator could not convert (e.g. invalid temporality) were skipped.
		if res.Message != "" {
			res.Message += "; "
		}
		res.Message += "not translated: " + core.Truncate(terr.Error(), core.MaxProblems*core.MaxProblemBytes)
		if res.Rejected == 0 {
			res.Rejected = 1
		}
	}
	rc.items.WithLabelValues("metrics", "accepted").Add(float64(md.DataPointCount()))
	return res, nil
}

// rejected counts a refusal of n items in the cluster's registry entry.
func (rc *Receiver) rejected(c *fleet.Cluster, n int, err error) error {
	var pe *core.Error
	if c != nil && errors.As(err, &pe) {
		c.Rejected(pe.Reason, n, pe.Msg)
	}
	return err
}

// ExportLogs checks attribute counts and identity, stamps identity, turns
// the records into Loki streams and pushes them through the logs-and-traces hub.
func (rc *Receiver) ExportLogs(ctx context.Context, c *fleet.Cluster, ld plog.Logs) (Result, error) {
	stamped, err := rc.stampLogs(c, ld)
	if err != nil {
		rc.items.WithLabelValues("logs", "rejected").Add(float64(ld.LogRecordCount()))
		return Result{}, rc.rejected(c, ld.LogRecordCount(), err)
	}
	streams := rc.logsToStreams(ld, stamped)
	if err := rc.sig.PushLogs(ctx, c, streams); err != nil {
		rc.items.WithLabelValues("logs", "rejected").Add(float64(ld.LogRecordCount()))
		return Result{}, err
	}
	rc.items.WithLabelValues("logs", "accepted").Add(float64(ld.LogRecordCount()))
	return Result{}, nil
}

// ExportTraces checks attribute counts and identity and pushes the spans
// through the logs-and-traces hub, which stamps identity.
func (rc *Receiver) ExportTraces(ctx context.Context, c *fleet.Cluster, td ptrace.Traces) (Result, error) {
	n := td.SpanCount()
	if err := rc.checkSpans(c, td); err != nil {
		rc.items.WithLabelValues("traces", "rejected").Add(float64(n))
		return Result{}, rc.rejected(c, n, err)
	}
	if err := rc.sig.PushTraces(ctx, c, td); err != nil {
		rc.items.WithLabelValues("traces", "rejected").Add(float64(n))
		return Result{}, err
	}
	rc.items.WithLabelValues("traces", "accepted").Add(float64(n))
	return Result{}, nil
}

// batchAppender adapts the pipeline batch to the AppenderV2 the translator writes to.
type batchAppender struct {
	b   *pipeline.Batch
	s   pipeline.Series
	err error
}

func (a *batchAppender) Append(_ storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AOptions) (storage.SeriesRef, error) {
	if a.err != nil {
		return 0, a.err
	}
	a.s.Reset()
	a.s.Labels = ls
	switch {
	case fh != nil:
		a.s.Histograms = append(a.s.Histograms, pipeline.HistogramSample{ST: st, T: t, FH: fh})
	case h != nil:
		a.s.Histograms = append(a.s.Histograms, pipeline.HistogramSample{ST: st, T: t, H: h})
	default:
		a.s.Samples = append(a.s.Samples, pipeline.Sample{ST: st, T: t, V: v})
	}
	a.s.Exemplars = opts.Exemplars
	if opts.Metadata.Type != "" && opts.MetricFamilyName == ls.Get(model.MetricNameLabel) {
		a.s.Metadata = opts.Metadata
	}
	if err := a.b.Add(&a.s); err != nil {
		a.err = err
		return 0, err
	}
	return 1, nil
}

func (*batchAppender) Commit() error { return nil }
func (a *batchAppender) Rollback() error {
	a.b.Abort()
	return nil
}
