package failover

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/health"
)

// Event kinds.
const (
	KindDrain           = "drain"
	KindRestore         = "restore"
	KindFailover        = "failover"
	KindFailback        = "failback"
	KindWeights         = "weights"
	KindAllBad          = "all_bad"
	KindAllBadCleared   = "all_bad_cleared"
	KindFreeze          = "freeze"
	KindUnfreeze        = "unfreeze"
	KindOverride        = "override"
	KindOverrideCleared = "override_cleared"
)

// Evidence is what a decision saw of one cluster.
type Evidence struct {
	Cluster    string                `json:"cluster"`
	State      health.State          `json:"state"`
	Score      float64               `json:"score"`
	BadStreak  int                   `json:"badStreak"`
	GoodStreak int                   `json:"goodStreak"`
	Reason     string                `json:"healthReason,omitempty"`
	Signals    []health.SignalResult `json:"signals,omitempty"`
}

// Freeze stops automatic decisions of a group.
type Freeze struct {
	Reason string     `json:"reason"`
	Since  time.Time  `json:"since"`
	Until  *time.Time `json:"until,omitempty"`
}

// Override pins the serving clusters of a group.
type Override struct {
	Clusters []string   `json:"clusters"`
	Reason   string     `json:"reason"`
	Since    time.Time  `json:"since"`
	Until    *time.Time `json:"until,omitempty"`
}

// Event is one decision with its reason, evidence and the group's resulting
// traffic assignment.
type Event struct {
	ID       uint64         `json:"id"`
	Time     time.Time      `json:"time"`
	Group    string         `json:"group"`
	Mode     Mode           `json:"mode"`
	Kind     string         `json:"kind"`
	Cluster  string         `json:"cluster,omitempty"`
	Reason   string         `json:"reason"`
	Evidence []Evidence     `json:"evidence,omitempty"`
	Serving  []string       `json:"serving"`
	Weights  map[string]int `json:"weights"`
	Drained  []string       `json:"drained"`
	Frozen   *Freeze        `json:"frozen,omitempty"`
	Override *Override      `json:"override,omitempty"`
	// Actor is the principal (auth: admin name) that made an operator
	// change (freeze, override); empty for automatic decisions.
	Actor string `json:"actor,omitempty"`
	// Drill marks events computed by a DR drill; they are never emitted.
	Drill bool `json:"drill,omitempty"`
}

type member struct {
	name      string
	standby   bool
	drained   bool
	drainedAt time.Time
	bad, good int
	goodSince time.Time
	seen      bool
	last      health.Result
}

func (m *member) viable() bool {
	return !m.drained && m.seen && m.bad == 0 && (m.last.State == health.Healthy || m.last.State == health.Degraded)
}

func (m *member) evidence(full bool) Evidence {
	ev := Evidence{Cluster: m.name, State: m.last.State, Score: m.last.Score, BadStreak: m.bad, GoodStreak: m.good, Reason: m.last.Reason}
	if !m.seen {
		ev.State = health.Unknown
	}
	if full {
		ev.Signals = m.last.Signals
	}
	return ev
}

type group struct {
	cfg         GroupConfig
	members     []*member
	serving     []string
	weights     map[string]int
	lastChange  time.Time
	lastWeights time.Time
	allBad      bool
	frozen      *Freeze
	override    *Override
}

// Engine decides, per group, which clusters take traffic. It is
// deterministic: the same observations give the same events, which is what
// the table tests and the DR drill rely on. It is safe for concurrent use.
type Engine struct {
	mu     sync.Mutex
	groups []*group
}

// NewEngine builds the engine from a validated config.
func NewEngine(cfg Config) *Engine {
	e := &Engine{}
	for _, gc := range cfg.Groups {
		gc = gc.WithDefaults()
		g := &group{cfg: gc, weights: map[string]int{}}
		for _, c := range gc.Clusters {
			g.members = append(g.members, &member{name: c})
		}
		for _, c := range gc.Standby {
			g.members = append(g.members, &member{name: c, standby: true})
		}
		g.serving = g.computeServing()
		for _, c := range g.serving {
			g.weights[c] = 100
		}
		e.groups = append(e.groups, g)
	}
	return e
}

// Clone deep-copies the engine (for drills).
func (e *Engine) Clone() *Engine {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := &Engine{}
	for _, g := range e.groups {
		ng := *g
		ng.members = nil
		for _, m := range g.members {
			nm := *m
			ng.members = append(ng.members, &nm)
		}
		ng.serving = slices.Clone(g.serving)
		ng.weights = map[string]int{}
		for k, v := range g.weights {
			ng.weights[k] = v
		}
		c.groups = append(c.groups, &ng)
	}
	return c
}

// Replace makes next's state (a Clone of e, changed since) the live one;
// next must not be used afterwards.
func (e *Engine) Replace(next *Engine) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.groups = next.groups
}

// Restore sets each group's assignment from the last logged event of that
// group, so a restart neither forgets a failover nor repeats it.
func (e *Engine) Restore(events []Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	last := map[string]Event{}
	for _, ev := range events {
		if !ev.Drill {
			last[ev.Group] = ev
		}
	}
	for _, g := range e.groups {
		ev, ok := last[g.cfg.Name]
		if !ok {
			continue
		}
		for _, m := range g.members {
			if slices.Contains(ev.Drained, m.name) {
				m.drained, m.drainedAt = true, ev.Time
			}
		}
		g.frozen, g.override = ev.Frozen, ev.Override
		g.allBad = ev.Kind == KindAllBad
		var serving []string
		for _, c := range ev.Serving {
			if g.member(c) != nil {
				serving = append(serving, c)
			}
		}
		if len(serving) > 0 {
			g.serving = serving
			g.weights = map[string]int{}
			for _, c := range serving {
				w := ev.Weights[c]
				if w <= 0 {
					w = 100
				}
				g.weights[c] = w
			}
		}
		g.lastChange, g.lastWeights = ev.Time, ev.Time
	}
}

func (g *group) member(name string) *member {
	for _, m := range g.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

// Observe feeds one evaluation round and returns the decisions it caused.
func (e *Engine) Observe(now time.Time, results []health.Result) []Event {
	byName := make(map[string]health.Result, len(results))
	for _, r := range results {
		byName[r.Cluster] = r
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, g := range e.groups {
		out = append(out, g.observe(now, byName)...)
	}
	return out
}

func (g *group) observe(now time.Time, res map[string]health.Result) []Event {
	touched := false
	for _, m := range g.members {
		r, ok := res[m.name]
		if !ok {
			continue
		}
		touched = true
		m.seen, m.last = true, r
		switch {
		case r.State == health.Down || (r.State != health.Unknown && r.Score < g.cfg.FailBelow):
			m.bad++
			m.good = 0
		case r.State == health.Healthy && r.Score >= g.cfg.RecoverAbove:
			if m.good == 0 {
				m.goodSince = now
			}
			m.good++
			m.bad = 0
		default: // degraded in the hysteresis band, or unknown: neither
			m.good = 0
			if r.State == health.Unknown {
				m.bad = 0
			}
		}
	}
	if !touched {
		return nil
	}
	if g.lastWeights.IsZero() {
		g.lastWeights, g.lastChange = now, now
	}
	var evs []Event
	if g.frozen != nil {
		if g.frozen.Until == nil || now.Before(*g.frozen.Until) {
			return nil
		}
		g.frozen = nil
		evs = append(evs, g.event(now, KindUnfreeze, "", "freeze expired", nil))
	}
	if g.override != nil && g.override.Until != nil && !now.Before(*g.override.Until) {
		g.override = nil
		evs = append(evs, g.event(now, KindOverrideCleared, "", "override expired", nil))
	}
	prevServing := slices.Clone(g.serving)
	var drainedNow, restoredNow []*member

	// Drain: N consecutive bad evaluations, if someone else can take the traffic.
	stuck := false
	for _, m := range g.members {
		if m.drained || m.bad < g.cfg.FailAfter {
			continue
		}
		if g.hasAlternative(m) {
			m.drained, m.drainedAt = true, now
			m.good = 0
			drainedNow = append(drainedNow, m)
			evs = append(evs, g.event(now, KindDrain, m.name,
				fmt.Sprintf("%d consecutive bad evaluations (fail_after=%d): %s", m.bad, g.cfg.FailAfter, m.last.Reason),
				[]Evidence{m.evidence(true)}))
		} else {
			stuck = true
		}
	}
	if stuck && !g.allBad {
		g.allBad = true
		lb := g.leastBad()
		evs = append(evs, g.event(now, KindAllBad, lb.name,
			fmt.Sprintf("every cluster of the group is bad or drained: draining nothing more, traffic stays; least bad is %s (state %s, score %g)", lb.name, lb.last.State, lb.last.Score),
			g.allEvidence()))
	} else if !stuck && g.allBad {
		g.allBad = false
		evs = append(evs, g.event(now, KindAllBadCleared, "", "a cluster can take traffic again", g.allEvidence()))
	}

	// Restore: M good evaluations spanning the cool-down, after hold-down and minimum dwell.
	for _, m := range g.members {
		if !m.drained || m.good < g.cfg.RecoverAfter {
			continue
		}
		goodFor, downFor, dwell := now.Sub(m.goodSince), now.Sub(m.drainedAt), now.Sub(g.lastChange)
		if goodFor < time.Duration(g.cfg.Cooldown) || downFor < time.Duration(g.cfg.HoldDown) || dwell < time.Duration(g.cfg.MinDwell) {
			continue
		}
		m.drained = false
		restoredNow = append(restoredNow, m)
		evs = append(evs, g.event(now, KindRestore, m.name,
			fmt.Sprintf("%d consecutive good evaluations over %s (recover_after=%d, cooldown=%s, hold_down=%s)",
				m.good, goodFor.Round(time.Millisecond), g.cfg.RecoverAfter, g.cfg.Cooldown, g.cfg.HoldDown),
			[]Evidence{m.evidence(true)}))
	}

	serving := g.computeServing()
	if !slices.Equal(serving, prevServing) {
		g.serving = serving
		g.lastChange = now
		g.weights = g.targetWeights(serving, nil)
		g.lastWeights = now
		kind, why := KindFailover, ""
		switch {
		case len(restoredNow) > 0 && len(drainedNow) == 0:
			kind, why = KindFailback, "restored "+names(restoredNow)
		case len(drainedNow) > 0:
			why = "drained " + names(drainedNow)
		default:
			why = "serving set changed"
		}
		evs = append(evs, g.event(now, kind, strings.Join(serving, ","),
			fmt.Sprintf("traffic moves from [%s] to [%s]: %s", strings.Join(prevServing, ","), strings.Join(serving, ","), why),
			g.allEvidence()))
	} else if g.cfg.Mode != ActivePassive && g.override == nil && now.Sub(g.lastWeights) >= time.Duration(g.cfg.MinDwell) {
		w := g.targetWeights(serving, g.weights)
		if !mapsEqual(w, g.weights) {
			old := g.weights
			g.weights, g.lastWeights = w, now
			evs = append(evs, g.event(now, KindWeights, "", fmt.Sprintf("weights follow health: %v -> %v", old, w), g.allEvidence()))
		}
	}
	// Snapshot fields must show the state after all changes of this round.
	for i := range evs {
		g.snapshot(&evs[i])
	}
	return evs
}

// hasAlternative reports whether another cluster could take m's traffic.
func (g *group) hasAlternative(m *member) bool {
	for _, o := range g.members {
		if o == m || (g.cfg.Mode == ActiveActive && o.standby) {
			continue
		}
		if o.viable() {
			return true
		}
	}
	return false
}

func (g *group) leastBad() *member {
	var best *member
	for _, m := range g.members {
		if m.drained {
			continue
		}
		if best == nil || m.last.Score > best.last.Score {
			best = m
		}
	}
	if best == nil {
		for _, m := range g.members {
			if best == nil || m.last.Score > best.last.Score {
				best = m
			}
		}
	}
	return best
}

// pickOrdered returns the first member that is not drained and is either
// serving already or viable; failing that the first that is not drained.
func (g *group) pickOrdered(ms []*member) *member {
	for _, m := range ms {
		if !m.drained && (slices.Contains(g.serving, m.name) || m.viable()) {
			return m
		}
	}
	for _, m := range ms {
		if !m.drained {
			return m
		}
	}
	return nil
}

func (g *group) computeServing() []string {
	if g.override != nil {
		return slices.Clone(g.override.Clusters)
	}
	var out []string
	switch g.cfg.Mode {
	case ActivePassive:
		if m := g.pickOrdered(g.members); m != nil {
			out = []string{m.name}
		}
	case ActiveActive, Hybrid:
		var standbys []*member
		for _, m := range g.members {
			if m.standby {
				standbys = append(standbys, m)
			} else if !m.drained {
				out = append(out, m.name)
			}
		}
		if len(out) == 0 {
			if m := g.pickOrdered(standbys); m != nil {
				out = []string{m.name}
			}
		}
	}
	if len(out) == 0 { // never drain everything: keep the least bad
		out = []string{g.leastBad().name}
	}
	return out
}

// targetWeights: active-passive gives the one serving cluster 100; the
// others follow the health score, moving only by at least WeightStep.
func (g *group) targetWeights(serving []string, cur map[string]int) map[string]int {
	w := map[string]int{}
	for _, c := range serving {
		if g.cfg.Mode == ActivePassive || len(serving) == 1 {
			w[c] = 100
			continue
		}
		m := g.member(c)
		target := 100
		if old, ok := cur[c]; ok && m != nil && m.bad > 0 {
			target = old // a cluster going bad is drained after N evaluations, not reweighted at once
		} else if m != nil && m.seen && m.last.State != health.Unknown {
			target = int(math.Max(1, math.Min(100, math.Round(m.last.Score))))
		}
		if old, ok := cur[c]; ok && math.Abs(float64(target-old)) < g.cfg.WeightStep {
			target = old
		}
		w[c] = target
	}
	return w
}

func (g *group) allEvidence() []Evidence {
	out := make([]Evidence, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m.evidence(false))
	}
	return out
}

func (g *group) event(now time.Time, kind, cluster, reason string, ev []Evidence) Event {
	return Event{Time: now, Group: g.cfg.Name, Mode: g.cfg.Mode, Kind: kind, Cluster: cluster, Reason: reason, Evidence: ev}
}

func (g *group) snapshot(ev *Event) {
	ev.Serving = slices.Clone(g.serving)
	ev.Weights = map[string]int{}
	for k, v := range g.weights {
		ev.Weights[k] = v
	}
	ev.Drained = []string{}
	for _, m := range g.members {
		if m.drained {
			ev.Drained = append(ev.Drained, m.name)
		}
	}
	ev.Frozen, ev.Override = g.frozen, g.override
}

// ErrNotFound is returned for an unknown group.
var ErrNotFound = errors.New("not found")

// ErrBadRequest wraps invalid operator input.
var ErrBadRequest = errors.New("bad request")

func (e *Engine) find(name string) (*group, error) {
	for _, g := range e.groups {
		if g.cfg.Name == name {
			return g, nil
		}
	}
	return nil, fmt.Errorf("%w: failover group %q", ErrNotFound, name)
}

// SetFreeze freezes (f != nil) or unfreezes a group.
func (e *Engine) SetFreeze(now time.Time, name string, f *Freeze) (Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, err := e.find(name)
	if err != nil {
		return Event{}, err
	}
	var ev Event
	if f != nil {
		f.Since = now
		g.frozen = f
		ev = g.event(now, KindFreeze, "", "frozen by operator: "+f.Reason, g.allEvidence())
	} else {
		if g.frozen == nil {
			return Event{}, fmt.Errorf("%w: group %q is not frozen", ErrBadRequest, name)
		}
		g.frozen = nil
		ev = g.event(now, KindUnfreeze, "", "unfrozen by operator", g.allEvidence())
	}
	g.snapshot(&ev)
	return ev, nil
}

// SetOverride pins (o != nil) or releases the serving clusters of a group.
func (e *Engine) SetOverride(now time.Time, name string, o *Override) (Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, err := e.find(name)
	if err != nil {
		return Event{}, err
	}
	kind, reason := KindOverrideCleared, "override released by operator"
	if o != nil {
		if len(o.Clusters) == 0 {
			return Event{}, fmt.Errorf("%w: override.clusters: at least one cluster must serve", ErrBadRequest)
		}
		for _, c := range o.Clusters {
			if g.member(c) == nil {
				return Event{}, fmt.Errorf("%w: override.clusters: %q is not a cluster of group %q", ErrBadRequest, c, name)
			}
		}
		o.Since = now
		kind, reason = KindOverride, "override by operator: "+o.Reason
	} else if g.override == nil {
		return Event{}, fmt.Errorf("%w: group %q has no override", ErrBadRequest, name)
	}
	g.override = o
	g.serving = g.computeServing()
	g.weights = g.targetWeights(g.serving, nil)
	g.lastChange, g.lastWeights = now, now
	ev := g.event(now, kind, strings.Join(g.serving, ","), reason, g.allEvidence())
	g.snapshot(&ev)
	return ev, nil
}

// GroupStatus is the live state of a group.
type GroupStatus struct {
	Name     string         `json:"name"`
	Mode     Mode           `json:"mode"`
	Serving  []string       `json:"serving"`
	Weights  map[string]int `json:"weights"`
	Drained  []string       `json:"drained"`
	AllBad   bool           `json:"allBad"`
	Frozen   *Freeze        `json:"frozen,omitempty"`
	Override *Override      `json:"override,omitempty"`
	Members  []Evidence     `json:"members"`
	Config   GroupConfig    `json:"config"`
}

// Status returns every group's live state.
func (e *Engine) Status() []GroupStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]GroupStatus, 0, len(e.groups))
	for _, g := range e.groups {
		var ev Event
		g.snapshot(&ev)
		out = append(out, GroupStatus{Name: g.cfg.Name, Mode: g.cfg.Mode, Serving: ev.Serving, Weights: ev.Weights,
			Drained: ev.Drained, AllBad: g.allBad, Frozen: g.frozen, Override: g.override, Members: g.allEvidence(), Config: g.cfg})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func names(ms []*member) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.name
	}
	return strings.Join(s, ",")
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
