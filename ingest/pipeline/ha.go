package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/fleetgate/fleetgate/fleet"
)

// HAConfig is the HA tracker (the `ha` section): Prometheus HA pairs send the same
// series with a replica label; fleetgate keeps one replica per (cluster, HA
// group) and fails over when it goes silent. No external KV store: the
// election lives in memory and in a small state file.
type HAConfig struct {
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
}

// Validate names the first bad field.
func (c *HAConfig) Validate() error {
	for _, l := range c.ReplicaLabels {
		if l == "" || !model.LabelName(l).IsValid() {
			return fmt.Errorf("ha.replica_labels: %q is not a valid label name", l)
		}
		if l == fleet.ClusterLabel {
			return fmt.Errorf("ha.replica_labels: %q is the cluster identity label", l)
		}
	}
	if c.GroupLabel != "" && !model.LabelName(c.GroupLabel).IsValid() {
		return fmt.Errorf("ha.group_label: %q is not a valid label name", c.GroupLabel)
	}
	if c.FailoverTimeout < 0 {
		return fmt.Errorf("ha.failover_timeout: must not be negative, got %s", c.FailoverTimeout)
	}
	if c.HistorySize < 0 {
		return fmt.Errorf("ha.history_size: must not be negative, got %d", c.HistorySize)
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

// HAGroupStatus is what /api/v1/ha shows of one HA group.
type HAGroupStatus struct {
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
}

// HATracker elects one replica per (cluster, HA group).
type HATracker struct {
	cfg     HAConfig
	timeout time.Duration
	now     func() time.Time

	mu     sync.RWMutex
	groups map[haKey]*haGroup

	dropped   *prometheus.CounterVec
	failovers *prometheus.CounterVec
}

// NewHATracker builds the tracker; it returns nil when HA is disabled.
func NewHATracker(cfg HAConfig, r prometheus.Registerer) (*HATracker, error) {
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
		cfg.HistorySize = 50
	}
	t := &HATracker{
		cfg: cfg, timeout: time.Duration(cfg.FailoverTimeout), now: time.Now, groups: map[haKey]*haGroup{},
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_dropped_samples_total",
			Help: "Samples dropped because they came from a replica that is not the elected one.",
		}, []string{"cluster"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_ha_elections_total",
			Help: "Changes of the elected replica by cluster and reason.",
		}, []string{"cluster", "reason"}),
	}
	if t.timeout == 0 {
		t.timeout = 30 * time.Second
	}
	if r != nil {
		for _, c := range []prometheus.Collector{t.dropped, t.failovers} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering HA tracker metrics: %w", err)
			}
		}
	}
	return t, nil
}

// SetHATracker makes the pipeline deduplicate HA replicas with t (nil: off).
func (p *Pipeline) SetHATracker(t *HATracker) { p.ha = t }

// Accept decides whether a stamped series of cluster c is kept: series
// without a replica label always are; a replica's series only when that
// replica is the elected one of its group (electing it when the group is
// new or the elected one has been silent longer than the failover
// timeout). n is the number of samples, counted when dropped. The
// returned labels lack the replica label unless keep_replica_label is set.
// Tracks reports whether ls carries a replica label, i.e. whether Accept
// decides about it. A nil tracker tracks nothing.
func (t *HATracker) Tracks(ls labels.Labels) bool {
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

func (t *HATracker) Accept(c *fleet.Cluster, ls labels.Labels, n int) (labels.Labels, bool) {
	if t == nil || c == nil {
		return ls, true
	}
	var name, replica string
	for _, l := range t.cfg.ReplicaLabels {
		if v := ls.Get(l); v != "" {
			name, replica = l, v
			break
		}
	}
	if replica == "" {
		return ls, true
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
			t.mu.RUnlock()
			return t.accepted(ls, name)
		case replica != g.elected && fresh && (g.pinned || now.Sub(g.lastSeen) <= t.timeout):
			t.mu.RUnlock()
			t.dropped.WithLabelValues(c.Name).Add(float64(n))
			return ls, false
		}
	}
	t.mu.RUnlock()

	t.mu.Lock()
	g := t.groups[key]
	if g == nil {
		g = &haGroup{elected: replica, lastSeen: now, replicas: map[string]time.Time{}}
		t.groups[key] = g
		t.elect(key, g, now, "", replica, "first")
	}
	g.replicas[replica] = now
	keep := false
	switch {
	case replica == g.elected:
		g.lastSeen = now
		keep = true
	case !g.pinned && now.Sub(g.lastSeen) > t.timeout:
		t.elect(key, g, now, g.elected, replica, "failover")
		g.elected, g.lastSeen = replica, now
		keep = true
	}
	t.mu.Unlock()
	if !keep {
		t.dropped.WithLabelValues(c.Name).Add(float64(n))
		return ls, false
	}
	return t.accepted(ls, name)
}

// haRefresh is how stale the last-seen times may get before a write lock
// refreshes them; far below any sensible failover timeout.
const haRefresh = 100 * time.Millisecond

// accepted returns the labels of an accepted series.
func (t *HATracker) accepted(ls labels.Labels, name string) (labels.Labels, bool) {
	if t.cfg.KeepReplicaLabel {
		return ls, true
	}
	return labels.NewBuilder(ls).Del(name).Labels(), true
}

// elect records an election; t.mu is held.
func (t *HATracker) elect(key haKey, g *haGroup, now time.Time, from, to, reason string) {
	g.history = append(g.history, Election{Time: now, From: from, To: to, Reason: reason})
	if len(g.history) > t.cfg.HistorySize {
		g.history = g.history[len(g.history)-t.cfg.HistorySize:]
	}
	t.failovers.WithLabelValues(key.cluster, reason).Inc()
}

// ErrBadPin is returned for a pin request that names nothing.
var ErrBadPin = errors.New("bad pin request")

// Pin forces replica to be the elected one of (cluster, group) until
// unpinned; an empty replica unpins (normal failover resumes).
func (t *HATracker) Pin(cluster, group, replica string) error {
	if t == nil {
		return fmt.Errorf("%w: the HA tracker is disabled (ha.enabled)", ErrBadPin)
	}
	if group != "" && t.cfg.GroupLabel == "" {
		return fmt.Errorf("%w: group %q given but ha.group_label is not set", ErrBadPin, group)
	}
	key := haKey{cluster: cluster, group: group}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[key]
	if replica == "" {
		if g == nil || !g.pinned {
			return nil
		}
		g.pinned = false
		t.elect(key, g, now, g.elected, g.elected, "unpin")
		return nil
	}
	if g == nil {
		g = &haGroup{replicas: map[string]time.Time{}}
		t.groups[key] = g
	}
	t.elect(key, g, now, g.elected, replica, "pin")
	g.elected, g.pinned, g.lastSeen = replica, true, now
	return nil
}

// Status lists every HA group, sorted by cluster and group.
func (t *HATracker) Status() []HAGroupStatus {
	if t == nil {
		return []HAGroupStatus{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]HAGroupStatus, 0, len(t.groups))
	for k, g := range t.groups {
		st := HAGroupStatus{Cluster: k.cluster, Group: k.group, Elected: g.elected, Pinned: g.pinned, LastSeen: g.lastSeen,
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
func (t *HATracker) Save(path string) error {
	if t == nil {
		return nil
	}
	b, err := json.Marshal(t.Status())
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("writing HA state: %w", err)
	}
	return os.Rename(tmp, path)
}

// Load restores the elections saved by Save; a missing file is no error.
func (t *HATracker) Load(path string) error {
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
	var st []HAGroupStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("decoding HA state %s: %w", path, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range st {
		g := &haGroup{elected: s.Elected, lastSeen: s.LastSeen, pinned: s.Pinned, replicas: s.Replicas, history: s.History}
		if g.replicas == nil {
			g.replicas = map[string]time.Time{}
		}
		t.groups[haKey{cluster: s.Cluster, group: s.Group}] = g
	}
	return nil
}
