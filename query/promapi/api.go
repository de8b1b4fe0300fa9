// Package promapi serves the Prometheus HTTP API (Prometheus's own
// web/api/v1 handlers) over a storage.Queryable — in fleetgate the federated
// one of query/federation behind the reader's scope — with a results cache
// in front of range queries, and builds the PromQL engine health and the
// API share.
package promapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/route"
	"github.com/prometheus/common/version"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/features"
	"github.com/prometheus/prometheus/util/notifications"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/internal/httpapi"
	"github.com/fleetgate/fleetgate/store/metrics"
)

// Config of the query engine (flags --query.timeout, --query.max-samples,
// --query.lookback-delta).
type Config struct {
	Timeout       model.Duration `yaml:"timeout"`
	MaxSamples    int            `yaml:"max_samples"`
	LookbackDelta model.Duration `yaml:"lookback_delta"`
	ResultsCache  CacheConfig    `yaml:"results_cache"`
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
// They match Prometheus's.
func DefaultConfig() Config {
	return Config{
		Timeout:       model.Duration(2 * time.Minute),
		MaxSamples:    50_000_000,
		LookbackDelta: model.Duration(5 * time.Minute),
		ResultsCache:  CacheConfig{MaxSizeBytes: 128 << 20, MaxFreshness: model.Duration(10 * time.Minute)},
	}
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("timeout: must not be negative, got %s", c.Timeout)
	}
	if c.MaxSamples < 0 {
		return fmt.Errorf("max_samples: must not be negative, got %d", c.MaxSamples)
	}
	if c.LookbackDelta < 0 {
		return fmt.Errorf("lookback_delta: must not be negative, got %s", c.LookbackDelta)
	}
	if err := c.ResultsCache.Validate(); err != nil {
		return fmt.Errorf("results_cache.%w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxSamples == 0 {
		c.MaxSamples = d.MaxSamples
	}
	if c.LookbackDelta == 0 {
		c.LookbackDelta = d.LookbackDelta
	}
	return c
}

// Options are what the API reads from.
type Options struct {
	Config     Config
	Queryable  storage.SampleAndChunkQueryable
	Exemplars  storage.ExemplarQueryable
	TSDB       v1.TSDBAdminStats // may be nil when there is no embedded TSDB
	TSDBDir    string
	Metadata   *metrics.Metadata
	Rules      func(context.Context) v1.RulesRetriever // may be nil: no rules
	Flags      map[string]string
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
	Ready      func() bool
	// Reported by status/runtimeinfo: when the process started and loaded
	// its configuration (zero: when New ran), and the storage retention as
	// Prometheus writes it ("15d or 10GiB"; empty without an embedded TSDB).
	StartTime, ConfigTime time.Time
	StorageRetention      string
}

// API is the Prometheus-compatible HTTP API.
type API struct {
	parser parser.Parser
	inner  *v1.API
	router *route.Router
	cache  *resultsCache
	meta   *metrics.Metadata
	logger *slog.Logger
	start  time.Time
	noTSDB bool
	// runtimeinfo
	configTime time.Time
	retention  string
	gatherer   prometheus.Gatherer
}

// NewEngine builds the PromQL engine with fleetgate's settings; health, SLO
// and cost evaluate through the same engine.
func NewEngine(cfg Config, r prometheus.Registerer, logger *slog.Logger) *promql.Engine {
	cfg = cfg.withDefaults()
	return promql.NewEngine(promql.EngineOpts{
		Logger:               logger.With("component", "query engine"),
		Reg:                  r,
		MaxSamples:           cfg.MaxSamples,
		Timeout:              time.Duration(cfg.Timeout),
		LookbackDelta:        time.Duration(cfg.LookbackDelta),
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		EnablePerStepStats:   true,
		Parser:               parser.NewParser(parser.Options{}),
		NoStepSubqueryIntervalFn: func(int64) int64 {
			return int64(time.Minute / time.Millisecond)
		},
	})
}

// New builds the API over opts.Queryable.
func New(engine *promql.Engine, o Options) (*API, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	cfg := o.Config.withDefaults()
	a := &API{parser: parser.NewParser(parser.Options{}), meta: o.Metadata, logger: o.Logger,
		start: o.StartTime, configTime: o.ConfigTime, retention: o.StorageRetention}
	if a.start.IsZero() {
		a.start = time.Now()
	}
	if a.configTime.IsZero() {
		a.configTime = a.start
	}
	ready := func(f http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if o.Ready != nil && !o.Ready() {
				http.Error(w, "fleetgate is starting up", http.StatusServiceUnavailable)
				return
			}
			f(w, r)
		}
	}
	rules := o.Rules
	if rules == nil {
		rules = func(context.Context) v1.RulesRetriever { return noRules{} }
	}
	var tsdbStats v1.TSDBAdminStats = noTSDB{}
	a.noTSDB = o.TSDB == nil
	if o.TSDB != nil {
		tsdbStats = o.TSDB
	}
	gatherer := o.Gatherer
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	a.gatherer = gatherer
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	exemplars := o.Exemplars
	if exemplars == nil {
		exemplars = noExemplars{}
	}
	bi := &v1.PrometheusVersion{
		Version: version.Version, Revision: version.GetRevision(), Branch: version.Branch,
		BuildUser: version.BuildUser, BuildDate: version.BuildDate, GoVersion: runtime.Version(),
	}
	if bi.Version == "" {
		bi.Version = "3.16.0-fleetgate"
	}
	a.inner = v1.NewAPI(
		engine, o.Queryable, nil, exemplars,
		func(context.Context) v1.ScrapePoolsRetriever { return noTargets{} },
		func(context.Context) v1.TargetRetriever { return noTargets{} },
		func(context.Context) v1.AlertmanagerRetriever { return noAlertmanagers{} },
		func() config.Config { return config.DefaultConfig },
		o.Flags,
		v1.GlobalURLOptions{},
		ready,
		tsdbStats, o.TSDBDir,
		false, // admin APIs stay off
		false, 0,
		o.Logger.With("component", "api"),
		rules,
		5e7, 10, 1048576, // remote-read limits: Prometheus's defaults
		false, nil,
		a.runtimeInfo, bi,
		// fleetgate keeps no notifications: an empty list, and the live
		// stream answers 204 (a nil getter panics inside the handler).
		func() []notifications.Notification { return []notifications.Notification{} },
		func() (<-chan notifications.Notification, func(), bool) { return nil, func() {}, false },
		gatherer, reg,
		nil,
		false, nil, false, false, false,
		time.Duration(cfg.LookbackDelta),
		false, false,
		nil,
		features.DefaultRegistry, // what the engine and parser report (a nil registry is a 500)
		v1.OpenAPIOptions{Version: bi.Version},
		a.parser,
		false,
		time.Duration(cfg.Timeout),
	)
	var err error
	if a.cache, err = newResultsCache(cfg.ResultsCache, engine, o.Queryable, a.parser, reg, o.Logger); err != nil {
		return nil, err
	}
	a.router = route.New()
	a.inner.Register(a.router.WithPrefix("/api/v1"))
	return a, nil
}

// Register mounts the API on mux. Every route reads the reader's scope
// from the request context (access.WithScope); the TSDB status and the
// self-metrics span every cluster and are refused to a scoped reader.
func (a *API) Register(mux httpapi.Mux) {
	a.registerQuery(mux)
	status := withRequestOptions(a.router)
	if a.noTSDB {
		// Like Prometheus in agent mode: a clear 422, not an internal error.
		status = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpapi.WriteError(w, http.StatusUnprocessableEntity, "execution", errNoTSDB.Error())
		})
	}
	mux.Handle("GET /api/v1/status/tsdb", access.RequireAllClusters(status))
	mux.Handle("GET /api/v1/status/tsdb/blocks", access.RequireAllClusters(status))
	mux.Handle("GET /api/v1/status/self_metrics", access.RequireAllClusters(withRequestOptions(a.router)))
	// Prometheus's search API needs a storage.Searcher, which neither the
	// federation nor the reader scope provides: say so instead of a 500.
	mux.HandleFunc("/api/v1/search/", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "fleetgate does not serve Prometheus's search API; use /api/v1/labels, /api/v1/label/<name>/values and /api/v1/series")
	})
	// The TSDB admin APIs (delete series, snapshot) stay off; Prometheus
	// answers that with a 500.
	mux.HandleFunc("/api/v1/admin/", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "fleetgate does not serve Prometheus's TSDB admin APIs")
	})
	mux.HandleFunc("GET /api/v1/metadata", a.metadata)
	mux.HandleFunc("POST /api/v1/metadata", a.metadata)
}

// runtimeInfo answers status/runtimeinfo as Prometheus's web.Handler does.
// fleetgate reads its configuration once and has no reload: the one load
// succeeded (or fleetgate would not be serving) at ConfigTime.
func (a *API) runtimeInfo() (v1.RuntimeInfo, error) {
	cwd, err := os.Getwd()
	if err != nil {
		cwd = "<error retrieving current working directory>" // Prometheus's text
	}
	info := v1.RuntimeInfo{
		StartTime: a.start, CWD: cwd, ServerTime: time.Now().UTC(),
		ReloadConfigSuccess: true, LastConfigTime: a.configTime,
		GoroutineCount: runtime.NumGoroutine(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		GOMEMLIMIT: debug.SetMemoryLimit(-1),
		GOGC:       os.Getenv("GOGC"), GODEBUG: os.Getenv("GODEBUG"),
		StorageRetention: a.retention,
	}
	if info.Hostname, err = os.Hostname(); err != nil {
		return info, fmt.Errorf("error getting hostname: %w", err)
	}
	mfs, err := a.gatherer.Gather()
	if err != nil {
		return info, fmt.Errorf("error gathering runtime status: %w", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "prometheus_tsdb_wal_corruptions_total" {
			for _, m := range mf.GetMetric() {
				info.CorruptionCount += int64(m.GetCounter().GetValue())
			}
		}
	}
	return info, nil
}

// metadata serves /api/v1/metadata from what senders reported.
func (a *API) metadata(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("parsing form: %v", err))
		return
	}
	limit, err := intParam(r, "limit", -1)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	perMetric, err := intParam(r, "limit_per_metric", -1)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	scope, ok := access.ScopeFrom(r.Context())
	if !ok {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", access.ErrNoScope.Error())
		return
	}
	data := map[string][]metrics.Entry{}
	if a.meta != nil {
		// Only families reported by the clusters the caller may see.
		data = a.meta.ListFor(r.Form.Get("metric"), limit, perMetric, scope.Allows)
	}
	httpapi.WriteSuccess(w, data)
}

func intParam(r *http.Request, name string, def int) (int, error) {
	s := r.Form.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid %s %q: %w", name, s, err)
	}
	if n <= 0 {
		return -1, nil
	}
	return n, nil
}

type noRules struct{}

func (noRules) RuleGroups() []*rules.Group           { return nil }
func (noRules) AlertingRules() []*rules.AlertingRule { return nil }

type noTargets struct{}

func (noTargets) ScrapePools() []string                       { return []string{} }
func (noTargets) TargetsActive() map[string][]*scrape.Target  { return map[string][]*scrape.Target{} }
func (noTargets) TargetsDropped() map[string][]*scrape.Target { return map[string][]*scrape.Target{} }
func (noTargets) TargetsDroppedCounts() map[string]int        { return map[string]int{} }
func (noTargets) ScrapePoolConfig(name string) (*config.ScrapeConfig, error) {
	return nil, fmt.Errorf("fleetgate does not scrape: no scrape pool %q", name)
}

type noAlertmanagers struct{}

func (noAlertmanagers) Alertmanagers() []*url.URL        { return nil }
func (noAlertmanagers) DroppedAlertmanagers() []*url.URL { return nil }

// noTSDB answers the TSDB status endpoints when there is no embedded TSDB.
type noTSDB struct{}

var errNoTSDB = errors.New("no embedded TSDB: fleetgate runs in forward-only mode")

func (noTSDB) CleanTombstones() error { return errNoTSDB }
func (noTSDB) Delete(context.Context, int64, int64, ...*labels.Matcher) error {
	return errNoTSDB
}
func (noTSDB) Snapshot(string, bool) error                    { return errNoTSDB }
func (noTSDB) Stats(string, int) (*tsdb.Stats, error)         { return nil, errNoTSDB }
func (noTSDB) WALReplayStatus() (tsdb.WALReplayStatus, error) { return tsdb.WALReplayStatus{}, nil }
func (noTSDB) BlockMetas() ([]tsdb.BlockMeta, error)          { return nil, errNoTSDB }

type noExemplars struct{}

func (noExemplars) ExemplarQuerier(context.Context) (storage.ExemplarQuerier, error) {
	return noExemplars{}, nil
}
func (noExemplars) Select(int64, int64, ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return []exemplar.QueryResult{}, nil
}
