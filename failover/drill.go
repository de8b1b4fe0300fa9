package failover

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/fleetgate/fleetgate/health"
)

// HealthView is what a drill needs of the health evaluator.
type HealthView interface {
	Results() []health.Result
	StaleAfter(cluster string) time.Duration
	Config() health.Config
}

// DrillReport says what would happen if a cluster went dark now.
type DrillReport struct {
	Cluster     string    `json:"cluster"`
	SimulatedAt time.Time `json:"simulatedAt"`
	// StaleAfterSeconds is the cluster's cadence-aware stale threshold.
	StaleAfterSeconds float64 `json:"staleAfterSeconds"`
	// DetectSeconds: from the last write until health reports the cluster down.
	DetectSeconds float64      `json:"detectSeconds"`
	Groups        []DrillGroup `json:"groups"`
	Capacity      []Capacity   `json:"capacity"`
	Notes         []string     `json:"notes"`
}

// DrillGroup is the simulated outcome in one failover group.
type DrillGroup struct {
	Group         string         `json:"group"`
	Mode          Mode           `json:"mode"`
	ServingBefore []string       `json:"servingBefore"`
	ServingAfter  []string       `json:"servingAfter"`
	WeightsAfter  map[string]int `json:"weightsAfter"`
	// DecideSeconds: from the last write until the decision.
	DecideSeconds *float64 `json:"decideSeconds"`
	// SignalSeconds: DecideSeconds plus the measured mean delivery time.
	SignalSeconds *float64 `json:"signalSeconds"`
	// Signals are the sinks that would receive something.
	Signals []string `json:"signals"`
	Events  []Event  `json:"events"`
}

// Capacity is a cluster's headroom for one resource after taking the
// drilled cluster's share, from kube-state-metrics requests vs allocatable.
type Capacity struct {
	Cluster     string   `json:"cluster"`
	Resource    string   `json:"resource"`
	Requests    *float64 `json:"requests"`
	Allocatable *float64 `json:"allocatable"`
	Absorbed    float64  `json:"absorbed"`
	// Headroom is allocatable - requests - absorbed; HeadroomRatio divides it by allocatable.
	Headroom      *float64 `json:"headroom"`
	HeadroomRatio *float64 `json:"headroomRatio"`
	Note          string   `json:"note,omitempty"`
}

// Drill simulates cluster going dark now against the live policy, on a
// copy of the engine: nothing is logged or sent.
func (c *Controller) Drill(ctx context.Context, h HealthView, q health.Querier, cluster string) (DrillReport, error) {
	now := c.now()
	rep := DrillReport{Cluster: cluster, SimulatedAt: now, Notes: []string{}, Groups: []DrillGroup{}, Capacity: []Capacity{}}
	var groups []GroupStatus
	for _, g := range c.engine.Status() {
		if slices.Contains(g.Config.Clusters, cluster) || slices.Contains(g.Config.Standby, cluster) {
			groups = append(groups, g)
		}
	}
	live := h.Results()
	known := false
	for _, r := range live {
		if r.Cluster == cluster {
			known = true
		}
	}
	if !known && len(groups) == 0 {
		return rep, fmt.Errorf("%w: cluster %q is neither evaluated by health nor in a failover group", ErrNotFound, cluster)
	}
	hc := h.Config()
	stale := h.StaleAfter(cluster)
	tick := min(250*time.Millisecond, time.Duration(hc.SuspectInterval)/4)
	detect := stale + tick
	rep.StaleAfterSeconds = stale.Seconds()
	rep.DetectSeconds = detect.Seconds()
	if len(groups) == 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s is in no failover group: no traffic moves", cluster))
		return rep, nil
	}

	sim := c.engine.Clone()
	dark := health.Result{Cluster: cluster, State: health.Down, Score: 0,
		Reason: fmt.Sprintf("drill: no telemetry for %s (stale after %s)", detect, stale)}
	pending := map[string]bool{}
	for _, g := range groups {
		pending[g.Name] = true
	}
	decided := map[string]time.Duration{}
	events := map[string][]Event{}
	for k := 0; k < 100 && len(pending) > 0; k++ {
		at := detect + time.Duration(k)*time.Duration(hc.SuspectInterval)
		round := []health.Result{dark}
		for _, r := range live {
			if r.Cluster != cluster {
				round = append(round, r)
			}
		}
		for _, ev := range sim.Observe(now.Add(at), round) {
			if _, ok := pending[ev.Group]; !ok && events[ev.Group] == nil {
				continue
			}
			ev.Drill = true
			events[ev.Group] = append(events[ev.Group], ev)
			if ev.Kind == KindFailover || ev.Kind == KindAllBad || ev.Kind == KindDrain {
				if _, ok := decided[ev.Group]; !ok {
					decided[ev.Group] = at
				}
				delete(pending, ev.Group)
			}
		}
	}
	after := map[string]GroupStatus{}
	for _, g := range sim.Status() {
		after[g.Name] = g
	}
	latency := time.Duration(0)
	measured := false
	for _, s := range c.sinks {
		if l, ok := c.outbox.MeanLatency(s.Name()); ok {
			latency, measured = max(latency, l), true
		}
	}
	if !measured && len(c.sinks) > 0 {
		rep.Notes = append(rep.Notes, "no signal delivered yet: signal time assumes zero delivery latency")
	}
	if len(c.sinks) == 0 {
		rep.Notes = append(rep.Notes, "no signal sinks are configured: decisions are only logged")
	}
	for _, g := range groups {
		a := after[g.Name]
		dg := DrillGroup{Group: g.Name, Mode: g.Mode, ServingBefore: g.Serving, ServingAfter: a.Serving, WeightsAfter: a.Weights,
			Events: events[g.Name], Signals: []string{}}
		if dg.Events == nil {
			dg.Events = []Event{}
		}
		if d, ok := decided[g.Name]; ok {
			ds := d.Seconds()
			ss := (d + latency).Seconds()
			dg.DecideSeconds, dg.SignalSeconds = &ds, &ss
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("group %s: no decision within 100 evaluations (frozen, overridden, or %s does not serve)", g.Name, cluster))
		}
		for _, ev := range dg.Events {
			for _, s := range c.sinks {
				if ps, err := s.Payloads(ev); err == nil && len(ps) > 0 && !slices.Contains(dg.Signals, s.Name()) {
					dg.Signals = append(dg.Signals, s.Name())
				}
			}
		}
		rep.Groups = append(rep.Groups, dg)
	}
	rep.Capacity = c.capacity(ctx, q, cluster, groups, after, &rep)
	return rep, nil
}

// capacity estimates the headroom of the clusters that take the traffic.
func (c *Controller) capacity(ctx context.Context, q health.Querier, dark string, before []GroupStatus, after map[string]GroupStatus, rep *DrillReport) []Capacity {
	out := []Capacity{}
	if q == nil {
		return out
	}
	// The dark cluster's requests move to the clusters serving after, by weight.
	share := map[string]float64{}
	for _, g := range before {
		if !slices.Contains(g.Serving, dark) {
			continue
		}
		a := after[g.Name]
		var total float64
		for _, cl := range a.Serving {
			if cl != dark {
				total += float64(max(a.Weights[cl], 1))
			}
		}
		for _, cl := range a.Serving {
			if cl != dark && total > 0 {
				share[cl] = math.Max(share[cl], float64(max(a.Weights[cl], 1))/total)
			}
		}
	}
	names := []string{}
	for _, g := range after {
		for _, cl := range g.Serving {
			if cl != dark && !slices.Contains(names, cl) {
				names = append(names, cl)
			}
		}
	}
	sort.Strings(names)
	now := c.now()
	darkReq := map[string]*float64{}
	for _, res := range []string{"cpu", "memory"} {
		darkReq[res] = querySum(ctx, q, fmt.Sprintf(`sum(kube_pod_container_resource_requests{cluster=%q,resource=%q})`, dark, res), now)
	}
	for _, cl := range names {
		for _, res := range []string{"cpu", "memory"} {
			cp := Capacity{Cluster: cl, Resource: res}
			cp.Requests = querySum(ctx, q, fmt.Sprintf(`sum(kube_pod_container_resource_requests{cluster=%q,resource=%q})`, cl, res), now)
			cp.Allocatable = querySum(ctx, q, fmt.Sprintf(`sum(kube_node_status_allocatable{cluster=%q,resource=%q})`, cl, res), now)
			if d := darkReq[res]; d != nil {
				cp.Absorbed = *d * share[cl]
			}
			if cp.Requests == nil || cp.Allocatable == nil {
				cp.Note = "no kube-state-metrics data (kube_pod_container_resource_requests / kube_node_status_allocatable)"
			} else {
				h := *cp.Allocatable - *cp.Requests - cp.Absorbed
				cp.Headroom = &h
				if *cp.Allocatable > 0 {
					r := h / *cp.Allocatable
					cp.HeadroomRatio = &r
				}
				if h < 0 {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s would be short of %s by %.4g after taking %s's share", cl, res, -h, dark))
				}
			}
			out = append(out, cp)
		}
	}
	if darkReq["cpu"] == nil && darkReq["memory"] == nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("no kube-state-metrics requests for %s: the absorbed load is unknown (counted as 0)", dark))
	}
	return out
}

func querySum(ctx context.Context, q health.Querier, expr string, ts time.Time) *float64 {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := q.Instant(qctx, expr, ts)
	if err != nil || len(v) == 0 {
		return nil
	}
	f := float64(v[0].Value)
	if math.IsNaN(f) {
		return nil
	}
	return &f
}
