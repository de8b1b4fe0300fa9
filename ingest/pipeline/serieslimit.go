package pipeline

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/fleetgate/fleetgate/fleet"
)

// ErrSeriesLimit is wrapped by the error a storage append returns when it
// would create a series over its cluster's limits.max_series.
var ErrSeriesLimit = errors.New("per-cluster series limit reached")

// SeriesLimitError is the refusal of one new series.
type SeriesLimitError struct {
	Cluster string
	Limit   int
}

func (e *SeriesLimitError) Error() string {
	return fmt.Sprintf("cluster %q is at its limit of %d active series (limits.max_series): new series are refused, existing ones still accepted", e.Cluster, e.Limit)
}

func (e *SeriesLimitError) Is(target error) bool { return target == ErrSeriesLimit }

// SeriesLimiter counts the active series of each cluster in the embedded
// TSDB's head by their `cluster` label and refuses a new series over the
// cluster's limits.max_series. It is the TSDB's own series lifecycle hook
// (tsdb.Options.SeriesLifecycleCallback): PreCreation refuses, PostCreation
// and PostDeletion (head garbage collection) count. Concurrent creations may
// pass the limit by at most the number of concurrent appenders.
//
// It counts from the start, WAL replay included, but refuses nothing until
// Enforce is called: series already in the WAL are never refused.
type SeriesLimiter struct {
	reg     *fleet.Registry
	enforce atomic.Bool

	mu       sync.RWMutex
	clusters map[string]*seriesCount
}

type seriesCount struct {
	n     atomic.Int64
	limit int // 0: unlimited
}

// NewSeriesLimiter builds the hook for reg's clusters. r may be nil; it gets
// fleetgate_cluster_active_series.
func NewSeriesLimiter(reg *fleet.Registry, r prometheus.Registerer) (*SeriesLimiter, error) {
	sl := &SeriesLimiter{reg: reg, clusters: map[string]*seriesCount{}}
	if r != nil {
		if err := r.Register(sl); err != nil {
			return nil, fmt.Errorf("registering series limit metrics: %w", err)
		}
	}
	return sl, nil
}

// Enforce starts refusing new series over the limit (after WAL replay).
func (sl *SeriesLimiter) Enforce() { sl.enforce.Store(true) }

// Replaying is called by the embedded store before it replays the WAL again
// in process (its reopen after a WAL failure, see store/metrics): the replay
// creates every series again, so the counts start from zero, and nothing is
// refused until Enforce is called once the store is open.
func (sl *SeriesLimiter) Replaying() {
	sl.enforce.Store(false)
	sl.mu.RLock()
	defer sl.mu.RUnlock()
	for _, sc := range sl.clusters {
		sc.n.Store(0)
	}
}

func (sl *SeriesLimiter) count(cluster string) *seriesCount {
	sl.mu.RLock()
	sc := sl.clusters[cluster]
	sl.mu.RUnlock()
	if sc != nil {
		return sc
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sc = sl.clusters[cluster]; sc == nil {
		sc = &seriesCount{}
		if c := sl.reg.Get(cluster); c != nil {
			sc.limit = c.Limits().MaxSeries
		} else {
			sc.limit = sl.reg.DefaultLimits().MaxSeries
		}
		sl.clusters[cluster] = sc
	}
	return sc
}

// PreCreation implements tsdb.SeriesLifecycleCallback.
func (sl *SeriesLimiter) PreCreation(ls labels.Labels) error {
	if !sl.enforce.Load() {
		return nil
	}
	name := ls.Get(fleet.ClusterLabel)
	sc := sl.count(name)
	if sc.limit > 0 && sc.n.Load() >= int64(sc.limit) {
		return &SeriesLimitError{Cluster: name, Limit: sc.limit}
	}
	return nil
}

// PostCreation implements tsdb.SeriesLifecycleCallback.
func (sl *SeriesLimiter) PostCreation(ls labels.Labels) {
	sl.count(ls.Get(fleet.ClusterLabel)).n.Add(1)
}

// PostDeletion implements tsdb.SeriesLifecycleCallback.
func (sl *SeriesLimiter) PostDeletion(deleted map[chunks.HeadSeriesRef]labels.Labels) {
	if len(deleted) == 0 {
		return
	}
	var last string
	var sc *seriesCount
	for _, ls := range deleted {
		name := ls.Get(fleet.ClusterLabel)
		if sc == nil || name != last {
			sc, last = sl.count(name), name
		}
		sc.n.Add(-1)
	}
}

// ActiveSeries implements fleet.SeriesCounter.
func (sl *SeriesLimiter) ActiveSeries(cluster string) (int64, bool) {
	sl.mu.RLock()
	sc := sl.clusters[cluster]
	sl.mu.RUnlock()
	if sc == nil {
		return 0, true
	}
	return sc.n.Load(), true
}

var activeSeriesDesc = prometheus.NewDesc("fleetgate_cluster_active_series",
	"Series of the cluster in the embedded TSDB's head (what limits.max_series bounds).", []string{"cluster"}, nil)

// Describe implements prometheus.Collector.
func (sl *SeriesLimiter) Describe(ch chan<- *prometheus.Desc) { ch <- activeSeriesDesc }

// Collect implements prometheus.Collector.
func (sl *SeriesLimiter) Collect(ch chan<- prometheus.Metric) {
	sl.mu.RLock()
	defer sl.mu.RUnlock()
	for name, sc := range sl.clusters {
		ch <- prometheus.MustNewConstMetric(activeSeriesDesc, prometheus.GaugeValue, float64(sc.n.Load()), name)
	}
}

// SeriesTracker enforces limits.max_series where the storage has no series
// hook (forward-only mode: the agent WAL). A cluster's series count is the
// number of distinct series it sent within the last SeriesIdleTimeout, kept
// per cluster in a set bounded by the cluster's limit: a new series when
// the set is full (after forgetting idle ones) is refused with the same 400
// as the TSDB hook's. Clusters without a series limit are not tracked.
type SeriesTracker struct {
	reg  *fleet.Registry
	now  func() time.Time
	mu   sync.RWMutex
	sets map[*fleet.Cluster]*seriesSet
}

// SeriesIdleTimeout is how long a series the tracker has not seen still counts.
const SeriesIdleTimeout = time.Hour

type seriesSet struct {
	mu        sync.RWMutex
	seen      map[uint64]int64 // series key -> unix seconds last seen (to the minute)
	lastSweep int64
}

// NewSeriesTracker builds the tracker of reg's clusters; r may be nil (it
// gets fleetgate_cluster_active_series).
func NewSeriesTracker(reg *fleet.Registry, r prometheus.Registerer) (*SeriesTracker, error) {
	st := &SeriesTracker{reg: reg, now: time.Now, sets: map[*fleet.Cluster]*seriesSet{}}
	if r != nil {
		if err := r.Register(st); err != nil {
			return nil, fmt.Errorf("registering series limit metrics: %w", err)
		}
	}
	return st, nil
}

// SetSeriesTracker makes the pipeline enforce limits.max_series itself
// (forward-only mode); nil: the storage enforces it, or nothing does.
func (p *Pipeline) SetSeriesTracker(t *SeriesTracker) { p.tracker = t }

func (st *SeriesTracker) set(c *fleet.Cluster) *seriesSet {
	st.mu.RLock()
	s := st.sets[c]
	st.mu.RUnlock()
	if s != nil {
		return s
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if s = st.sets[c]; s == nil {
		s = &seriesSet{seen: map[uint64]int64{}}
		st.sets[c] = s
	}
	return s
}

// admit records series key of c and tells whether it may be written.
func (st *SeriesTracker) admit(c *fleet.Cluster, key uint64) error {
	limit := c.Limits().MaxSeries
	if limit <= 0 {
		return nil
	}
	now := st.now().Unix()
	s := st.set(c)
	s.mu.RLock()
	last, ok := s.seen[key]
	s.mu.RUnlock()
	if ok && now-last < 60 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[key]; !ok && len(s.seen) >= limit {
		if now-s.lastSweep >= 60 {
			s.lastSweep = now
			idle := int64(SeriesIdleTimeout / time.Second)
			for k, t := range s.seen {
				if now-t > idle {
					delete(s.seen, k)
				}
			}
		}
		if len(s.seen) >= limit {
			return &SeriesLimitError{Cluster: c.Name, Limit: limit}
		}
	}
	s.seen[key] = now
	return nil
}

// ActiveSeries implements fleet.SeriesCounter: series seen within the idle
// timeout (tracked only for clusters with a series limit).
func (st *SeriesTracker) ActiveSeries(cluster string) (int64, bool) {
	c := st.reg.Get(cluster)
	if c == nil || c.Limits().MaxSeries <= 0 {
		return 0, false
	}
	s := st.set(c)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return int64(len(s.seen)), true
}

// Describe implements prometheus.Collector.
func (st *SeriesTracker) Describe(ch chan<- *prometheus.Desc) { ch <- activeSeriesDesc }

// Collect implements prometheus.Collector.
func (st *SeriesTracker) Collect(ch chan<- prometheus.Metric) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	for c, s := range st.sets {
		s.mu.RLock()
		n := len(s.seen)
		s.mu.RUnlock()
		ch <- prometheus.MustNewConstMetric(activeSeriesDesc, prometheus.GaugeValue, float64(n), c.Name)
	}
}
