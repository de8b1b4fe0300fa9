// Package ha deduplicates Prometheus HA pairs for the metrics pipeline: it
// elects one replica per (cluster, HA group), fails over when it goes silent,
// backfills the takeover gap from the standby's recent samples, keeps
// operator pins durably, and serves /api/v1/ha (status) and
// /api/v1/ha/{cluster}/pin (pin and unpin).
package ha

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/internal/durable"
)

// Config is the HA tracker (the `ha` section): Prometheus HA pairs send the same
// series with a replica label; fleetgate keeps one replica per (cluster, HA
// group) and fails over when it goes silent. No external KV store: the
// election lives in memory and in a small state file.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// ReplicaLabels name the replica; the first one present on a series counts
	// (default __replica__, replica, prometheus_replica).
	ReplicaLabels []string `yaml:"replica_labels"`
	// GroupLabel, when set, splits a cluster into several HA groups by its
	// value (e.g. one group per Prometheus pair); empty means one group per cluster.
	GroupLabel string `yaml:"group_label"`
	// FailoverTimeout: the elected replica is replaced when nothing came from
	// it for this long (default 30s).
	FailoverTimeout model.Duration `yaml:"failover_timeout"`
	// KeepReplicaLabel keeps the replica label on accepted series; by default
	// it is dropped so a failover continues the same series.
	KeepReplicaLabel bool `yaml:"keep_replica_label"`
	// HistorySize is how many elections are kept per group (default 50).
	HistorySize int `yaml:"history_size"`
	// BackfillMaxSamples bounds, per HA group, the standby's most recent
	// dropped float samples kept in memory; on failover the ones newer than
	// the old replica's last sample of the same series are appended first,
	// so the takeover leaves no gap. Nil: 50000; 0 disables the backfill.
	BackfillMaxSamples *int `yaml:"backfill_max_samples"`
}

// DefaultBackfillMaxSamples is ha.backfill_max_samples when not set.
const DefaultBackfillMaxSamples = 50000

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	for _, l := range c.ReplicaLabels {
		if l == "" || !model.UTF8Validation.IsValidLabelName(l) {
			return fmt.Errorf("replica_labels: %q is not a valid label name", l)
		}
		if l == fleet.ClusterLabel {
			return fmt.Errorf("replica_labels: %q is the cluster identity label", l)
		}
	}
	if c.GroupLabel != "" && !model.UTF8Validation.IsValidLabelName(c.GroupLabel) {
		return fmt.Errorf("group_label: %q is not a valid label name", c.GroupLabel)
	}
	if c.FailoverTimeout < 0 {
		return fmt.Errorf("failover_timeout: must not be negative, got %s", c.FailoverTimeout)
	}
	if c.HistorySize < 0 {
		return fmt.Errorf("history_size: must not be negative, got %d", c.HistorySize)
	}
	if c.BackfillMaxSamples != nil && *c.BackfillMaxSamples < 0 {
		return fmt.Errorf("backfill_max_samples: must not be negative, got %d", *c.BackfillMaxSamples)
	}
	return nil
}

// DefaultReplicaLabels are the replica labels Prometheus HA setups use.
var DefaultReplicaLabels = []string{"__replica__", "replica", "prometheus_replica"}

// Election is one change of the elected replica.
type Election struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Reason string    `json:"reason"` // first, failover, pin, unpin
}

// GroupStatus is what /api/v1/ha shows of one HA group.
type GroupStatus struct {
	Cluster  string               `json:"cluster"`
	Group    string               `json:"group,omitempty"`
	Elected  string               `json:"elected"`
	Pinned   bool                 `json:"pinned"`
	LastSeen time.Time            `json:"lastSeen"`
	Replicas map[string]time.Time `json:"replicas"`
	History  []Election           `json:"history"`
}

type haKey struct{ cluster, group string }

type haGroup struct {
	elected  string
	lastSeen time.Time // of the elected replica
	pinned   bool
	replicas map[string]time.Time
	history  []Election

	// last is the elected replica's last accepted sample time per series
	// (by hash of the accepted labels), *atomic.Int64 values; nil without
	// backfill. Replaced on every election.
	last *sync.Map
	bf   haBackfill // the standbys' recent samples
}

type bfEntry struct {
	hash    uint64
	replica string
	pipeline.HABackfill
}

// haBackfill is a ring of the standbys' most recent samples, oldest first.
type haBackfill struct {
	mu    sync.Mutex
	ring  []bfEntry
	head  int // index of the oldest entry
	count int
}

func (b *haBackfill) reset() {
	b.ring, b.head, b.count = nil, 0, 0
}

// Tracker elects one replica per (cluster, HA group).
type Tracker struct {
	cfg     Config
	timeout time.Duration
	now     func() time.Time

	mu     sync.RWMutex
	groups map[haKey]*haGroup

	// Pins are written durably to pinPath before they take effect (pins.go).
	pinMu   sync.Mutex
	pinPath string
	pins    map[haKey]string // replica pinned per group

	dropped   *prometheus.CounterVec
	failovers *prometheus.CounterVec

	backfillMax    int   // per group; 0: off
	backfillWindow int64 // ms: older buffered samples cannot fill a failover gap
	backfilled     *prometheus.CounterVec
	bfFailed       *prometheus.CounterVec
	bfEvicted      *prometheus.CounterVec
	bfSize         prometheus.Gauge
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
// (backfill_max_samples left out is 50000; set to 0 it disables the backfill).
func DefaultConfig() Config {
	return Config{
		ReplicaLabels:   slices.Clone(DefaultReplicaLabels),
		FailoverTimeout: model.Duration(30 * time.Second),
		HistorySize:     50,
	}
}

// New builds the tracker; it returns nil when HA is disabled.
func New(cfg Config, r prometheus.Registerer) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled {
		return nil, nil
	}
	if len(cfg.ReplicaLabels) == 0 {
		cfg.ReplicaLabels = DefaultReplicaLabels
	}
	if cfg.HistorySize == 0 {
		cfg.HistorySize = DefaultConfig().HistorySize
	}
	t := &Tracker{
		cfg: cfg, timeout: time.Duration(cfg.FailoverTimeout), now: time.Now, groups: map[haKey]*haGroup{},
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_dropped_samples_total",
			Help: "Samples dropped because they came from a replica that is not the elected one.",
		}, []string{"cluster"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_elections_total",
			Help: "Changes of the elected replica by cluster and reason.",
		}, []string{"cluster", "reason"}),
		backfilled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_backfilled_samples_total",
			Help: "Buffered samples of a standby replica appended when it took over.",
		}, []string{"cluster"}),
		bfFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_backfill_failed_samples_total",
			Help: "Buffered standby samples the storage refused on takeover (out of order, duplicate, ...), by reason.",
		}, []string{"cluster", "reason"}),
		bfEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_backfill_evicted_samples_total",
			Help: "Standby samples pushed out of a full backfill buffer (ha.backfill_max_samples) while still recent.",
		}, []string{"cluster"}),
		bfSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetgate_ha_backfill_buffer_samples",
			Help: "Standby samples held in the HA backfill buffers.",
		}),
	}
	if t.timeout == 0 {
		t.timeout = 30 * time.Second
	}
	t.backfillMax = DefaultBackfillMaxSamples
	if cfg.BackfillMaxSamples != nil {
		t.backfillMax = *cfg.BackfillMaxSamples
	}
	t.backfillWindow = (t.timeout + t.timeout/2 + 5*time.Second).Milliseconds()
	if r != nil {
		for _, c := range []prometheus.Collector{t.dropped, t.failovers, t.backfilled, t.bfFailed, t.bfEvicted, t.bfSize} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering HA tracker metrics: %w", err)
			}
		}
	}
	return t, nil
}

// Tracks reports whether ls carries a replica label, i.e. whether Accept
// decides about it. A nil tracker tracks nothing.
func (t *Tracker) Tracks(ls labels.Labels) bool {
	if t == nil {
		return false
	}
	for _, l := range t.cfg.ReplicaLabels {
		if ls.Get(l) != "" {
			return true
		}
	}
	return false
}

// Accept decides whether a stamped series of cluster c is kept: series
// without a replica label always are; a replica's series only when that
// replica is the elected one of its group (electing it when the group is
// new or the elected one has been silent longer than the failover
// timeout). s is the series: its samples are counted when dropped, and a
// standby's float samples are kept for backfill. The returned labels lack
// the replica label unless keep_replica_label is set. When the call elects
// a new replica on failover, it also returns that replica's buffered
// samples that fill the gap, to be appended before s.
func (t *Tracker) Accept(c *fleet.Cluster, ls labels.Labels, s *pipeline.Series) (labels.Labels, bool, []pipeline.HABackfill) {
	if t == nil || c == nil {
		return ls, true, nil
	}
	var name, replica string
	for _, l := range t.cfg.ReplicaLabels {
		if v := ls.Get(l); v != "" {
			name, replica = l, v
			break
		}
	}
	if replica == "" {
		return ls, true, nil
	}
	key := haKey{cluster: c.Name}
	if t.cfg.GroupLabel != "" {
		key.group = ls.Get(t.cfg.GroupLabel)
	}
	now := t.now()
	// Fast path under the read lock: the common decisions (the elected
	// replica, heard recently; another replica while the elected one is
	// alive) need no write while the timestamps they would refresh are fresh.
	t.mu.RLock()
	if g := t.groups[key]; g != nil {
		seen := g.replicas[replica]
		fresh := now.Sub(seen) < haRefresh && !seen.After(now)
		switch {
		case replica == g.elected && fresh && now.Sub(g.lastSeen) < haRefresh:
			last := g.last
			t.mu.RUnlock()
			out, _ := t.accepted(ls, name)
			t.noteLast(last, out, s)
			return out, true, nil
		case replica != g.elected && fresh && (g.pinned || now.Sub(g.lastSeen) <= t.timeout):
			t.mu.RUnlock()
			t.drop(c, g, ls, name, replica, s, now)
			return ls, false, nil
		}
	}
	t.mu.RUnlock()

	t.mu.Lock()
	g := t.groups[key]
	if g == nil {
		g = &haGroup{elected: replica, lastSeen: now, replicas: map[string]time.Time{}, last: t.newLast()}
		t.groups[key] = g
		t.elect(key, g, now, "", replica, "first")
	}
	g.replicas[replica] = now
	keep := false
	var backfill []pipeline.HABackfill
	switch {
	case replica == g.elected:
		g.lastSeen = now
		keep = true
	case !g.pinned && now.Sub(g.lastSeen) > t.timeout:
		t.elect(key, g, now, g.elected, replica, "failover")
		backfill = t.takeBackfill(g, replica, now)
		g.elected, g.lastSeen, g.last = replica, now, t.newLast()
		keep = true
	}
	last := g.last
	t.mu.Unlock()
	if !keep {
		t.drop(c, g, ls, name, replica, s, now)
		return ls, false, nil
	}
	out, _ := t.accepted(ls, name)
	t.noteLast(last, out, s)
	return out, true, backfill
}

func (t *Tracker) newLast() *sync.Map {
	if t.backfillMax == 0 {
		return nil
	}
	return &sync.Map{}
}

// noteLast records the elected replica's newest sample time of series out.
func (t *Tracker) noteLast(last *sync.Map, out labels.Labels, s *pipeline.Series) {
	if last == nil || s == nil {
		return
	}
	newest := int64(math.MinInt64)
	for i := range s.Samples {
		newest = max(newest, s.Samples[i].T)
	}
	for i := range s.Histograms {
		newest = max(newest, s.Histograms[i].T)
	}
	if newest == math.MinInt64 {
		return
	}
	h := out.Hash()
	v, ok := last.Load(h)
	if !ok {
		nv := &atomic.Int64{}
		nv.Store(newest)
		if v, ok = last.LoadOrStore(h, nv); !ok {
			return
		}
	}
	a := v.(*atomic.Int64)
	for {
		old := a.Load()
		if old >= newest || a.CompareAndSwap(old, newest) {
			return
		}
	}
}

// drop counts the samples of a standby replica and keeps its float samples
// in the group's backfill buffer.
func (t *Tracker) drop(c *fleet.Cluster, g *haGroup, ls labels.Labels, name, replica string, s *pipeline.Series, now time.Time) {
	if s == nil {
		return
	}
	t.dropped.WithLabelValues(c.Name).Add(float64(len(s.Samples) + len(s.Histograms)))
	if t.backfillMax == 0 || len(s.Samples) == 0 {
		return
	}
	cutoff := now.UnixMilli() - t.backfillWindow
	if s.Samples[len(s.Samples)-1].T < cutoff {
		return // too old to fill a failover gap
	}
	out, _ := t.accepted(ls, name)
	out = ownLabels(out) // kept beyond the request
	h := out.Hash()
	b := &g.bf
	evicted, delta := 0, 0
	b.mu.Lock()
	for b.count > 0 && b.ring[b.head].Sample.T < cutoff {
		b.pop()
		delta--
	}
	for i := range s.Samples {
		if s.Samples[i].T < cutoff {
			continue
		}
		if b.count == t.backfillMax {
			b.pop()
			evicted++
			delta--
		}
		b.push(bfEntry{hash: h, replica: replica, HABackfill: pipeline.HABackfill{Labels: out, Sample: s.Samples[i]}}, t.backfillMax)
		delta++
	}
	b.mu.Unlock()
	t.bfSize.Add(float64(delta))
	if evicted > 0 {
		t.bfEvicted.WithLabelValues(c.Name).Add(float64(evicted))
	}
}

func (b *haBackfill) pop() {
	b.ring[b.head] = bfEntry{}
	b.head = (b.head + 1) % len(b.ring)
	b.count--
}

// push appends e; the ring grows up to max entries and must have room.
func (b *haBackfill) push(e bfEntry, max int) {
	if b.count == len(b.ring) {
		n := min(max, 2*len(b.ring)+256)
		r := make([]bfEntry, n)
		for i := 0; i < b.count; i++ {
			r[i] = b.ring[(b.head+i)%len(b.ring)]
		}
		b.ring, b.head = r, 0
	}
	b.ring[(b.head+b.count)%len(b.ring)] = e
	b.count++
}

// takeBackfill empties g's buffer and returns the samples of replica (the
// new elected one) that are recent and newer than the old elected replica's
// last sample of the same series, oldest first; t.mu is held.
func (t *Tracker) takeBackfill(g *haGroup, replica string, now time.Time) []pipeline.HABackfill {
	if t.backfillMax == 0 {
		return nil
	}
	cutoff := now.UnixMilli() - t.backfillWindow
	b := &g.bf
	b.mu.Lock()
	var out []pipeline.HABackfill
	for i := 0; i < b.count; i++ {
		e := &b.ring[(b.head+i)%len(b.ring)]
		if e.replica != replica || e.Sample.T < cutoff {
			continue
		}
		if g.last != nil {
			if v, ok := g.last.Load(e.hash); ok && e.Sample.T <= v.(*atomic.Int64).Load() {
				continue
			}
		}
		out = append(out, e.HABackfill)
	}
	n := b.count
	b.reset()
	b.mu.Unlock()
	t.bfSize.Sub(float64(n))
	return out
}

// Backfilled counts the outcome of appending a takeover's backfill: ok
// samples appended, and refused ones by reason.
func (t *Tracker) Backfilled(c *fleet.Cluster, ok int, refused map[string]int) {
	if t == nil || c == nil {
		return
	}
	if ok > 0 {
		t.backfilled.WithLabelValues(c.Name).Add(float64(ok))
	}
	for r, n := range refused {
		t.bfFailed.WithLabelValues(c.Name, r).Add(float64(n))
	}
}

// haRefresh is how stale the last-seen times may get before a write lock
// refreshes them; far below any sensible failover timeout.
const haRefresh = 100 * time.Millisecond

// accepted returns the labels of an accepted series.
func (t *Tracker) accepted(ls labels.Labels, name string) (labels.Labels, bool) {
	if t.cfg.KeepReplicaLabel {
		return ls, true
	}
	lb := builderPool.Get().(*labels.Builder)
	lb.Reset(ls)
	out := lb.Del(name).Labels()
	lb.Reset(labels.EmptyLabels()) // keep no request's labels alive
	builderPool.Put(lb)
	return out, true
}

var builderPool = sync.Pool{New: func() any { return labels.NewBuilder(labels.EmptyLabels()) }}

// elect records an election; t.mu is held.
func (t *Tracker) elect(key haKey, g *haGroup, now time.Time, from, to, reason string) {
	g.history = append(g.history, Election{Time: now, From: from, To: to, Reason: reason})
	if len(g.history) > t.cfg.HistorySize {
		g.history = g.history[len(g.history)-t.cfg.HistorySize:]
	}
	t.failovers.WithLabelValues(key.cluster, reason).Inc()
}

// ErrBadPin is returned for a pin request that names nothing.
var ErrBadPin = errors.New("bad pin request")

// Pin forces replica to be the elected one of (cluster, group) until
// unpinned; an empty replica unpins (normal failover resumes). With a pin
// file (OpenPins) the change is written durably first: if that fails it does
// not take effect and the error wraps ErrPinNotSaved.
func (t *Tracker) Pin(cluster, group, replica string) error {
	if t == nil {
		return fmt.Errorf("%w: the HA tracker is disabled (ha.enabled)", ErrBadPin)
	}
	if group != "" && t.cfg.GroupLabel == "" {
		return fmt.Errorf("%w: group %q given but ha.group_label is not set", ErrBadPin, group)
	}
	key := haKey{cluster: cluster, group: group}
	t.pinMu.Lock()
	defer t.pinMu.Unlock()
	if err := t.savePinLocked(key, replica); err != nil {
		return err
	}
	t.applyPin(key, replica, t.now())
	return nil
}

// applyPin makes the pin (or unpin, for an empty replica) take effect.
func (t *Tracker) applyPin(key haKey, replica string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[key]
	if replica == "" {
		if g == nil || !g.pinned {
			return
		}
		g.pinned = false
		t.elect(key, g, now, g.elected, g.elected, "unpin")
		return
	}
	if g == nil {
		g = &haGroup{replicas: map[string]time.Time{}, last: t.newLast()}
		t.groups[key] = g
	}
	if g.pinned && g.elected == replica {
		return
	}
	t.elect(key, g, now, g.elected, replica, "pin")
	if replica != g.elected {
		g.last = t.newLast()
	}
	g.elected, g.pinned, g.lastSeen = replica, true, now
}

// Status lists every HA group, sorted by cluster and group.
func (t *Tracker) Status() []GroupStatus {
	if t == nil {
		return []GroupStatus{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]GroupStatus, 0, len(t.groups))
	for k, g := range t.groups {
		st := GroupStatus{Cluster: k.cluster, Group: k.group, Elected: g.elected, Pinned: g.pinned, LastSeen: g.lastSeen,
			Replicas: make(map[string]time.Time, len(g.replicas)), History: append([]Election(nil), g.history...)}
		for r, ts := range g.replicas {
			st.Replicas[r] = ts
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Group < out[j].Group
	})
	return out
}

// Save writes the elections to path so a restart keeps the elected replicas.
func (t *Tracker) Save(path string) error {
	if t == nil {
		return nil
	}
	b, err := json.Marshal(t.Status())
	if err != nil {
		return err
	}
	if err := durable.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing HA state: %w", err)
	}
	return nil
}

// Load restores the elections saved by Save; a missing file is no error.
func (t *Tracker) Load(path string) error {
	if t == nil {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st []GroupStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("decoding HA state %s: %w", path, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range st {
		g := &haGroup{elected: s.Elected, lastSeen: s.LastSeen, pinned: s.Pinned, replicas: s.Replicas, history: s.History, last: t.newLast()}
		if g.replicas == nil {
			g.replicas = map[string]time.Time{}
		}
		t.groups[haKey{cluster: s.Cluster, group: s.Group}] = g
	}
	return nil
}
