// Package failover turns cluster health into traffic decisions with
// hysteresis, records each decision with its evidence in a durable log, and
// delivers signals (Alertmanager, webhooks, external-dns DNSEndpoint) from a
// durable outbox, emitted by one leader.
package failover

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"

	"github.com/prometheus/common/model"
)

// Mode of a traffic group.
type Mode string

// The failover modes.
const (
	// ActiveActive: every healthy cluster serves; weights follow health.
	ActiveActive Mode = "active-active"
	// ActivePassive: one cluster serves, the first healthy in priority order.
	ActivePassive Mode = "active-passive"
	// Hybrid: Clusters serve active-active; Standby clusters, in order,
	// take over only when every one of Clusters is drained.
	Hybrid Mode = "hybrid"
)

// Config is the `failover:` section.
type Config struct {
	Groups []GroupConfig `yaml:"groups" json:"groups,omitempty"`
}

// GroupConfig is one service or traffic group spanning clusters.
type GroupConfig struct {
	Name string `yaml:"name" json:"name,omitempty"`
	Mode Mode   `yaml:"mode" json:"mode,omitempty"`
	// Clusters in priority order (the first is the primary in active-passive).
	Clusters []string `yaml:"clusters" json:"clusters,omitempty"`
	// Standby clusters in priority order (active-passive and hybrid).
	Standby []string `yaml:"standby" json:"standby,omitempty"`
	// FailAfter is N: consecutive bad evaluations before a cluster is drained (default 3).
	FailAfter int `yaml:"fail_after" json:"fail_after,omitempty"`
	// RecoverAfter is M: consecutive good evaluations before it may return (default 3).
	RecoverAfter int `yaml:"recover_after" json:"recover_after,omitempty"`
	// Cooldown: a drained cluster must have been good for this long to return (default 60s).
	Cooldown model.Duration `yaml:"cooldown" json:"cooldown,omitempty"`
	// HoldDown: a drained cluster stays drained at least this long (default 30s).
	HoldDown model.Duration `yaml:"hold_down" json:"hold_down,omitempty"`
	// MinDwell: a traffic assignment stays at least this long before a
	// non-emergency change (fail-back, weight change) (default 30s).
	MinDwell model.Duration `yaml:"min_dwell" json:"min_dwell,omitempty"`
	// FailBelow: a score below it (or state down) is a bad evaluation (default 40).
	FailBelow float64 `yaml:"fail_below" json:"fail_below,omitempty"`
	// RecoverAbove: a healthy state with a score at or above it is a good evaluation (default 80).
	RecoverAbove float64 `yaml:"recover_above" json:"recover_above,omitempty"`
	// WeightStep: active-active weights change only when the score moves
	// this far from the current weight (default 10).
	WeightStep float64 `yaml:"weight_step" json:"weight_step,omitempty"`
	// DNS, when set, is published as an external-dns DNSEndpoint.
	DNS *DNSConfig `yaml:"dns" json:"dns,omitempty"`
}

// DNSConfig describes the DNSEndpoint of a group.
type DNSConfig struct {
	Namespace  string `yaml:"namespace" json:"namespace,omitempty"`
	Name       string `yaml:"name" json:"name,omitempty"`
	Hostname   string `yaml:"hostname" json:"hostname,omitempty"`
	RecordType string `yaml:"record_type" json:"record_type,omitempty"`
	// TTL in seconds; low for failover speed (default 30).
	TTL int64 `yaml:"ttl" json:"ttl,omitempty"`
	// Targets per cluster (IPs for A/AAAA, hostnames for CNAME).
	Targets map[string][]string `yaml:"targets" json:"targets,omitempty"`
	// WeightKey is the provider-specific weight property (default "aws/weight").
	WeightKey string `yaml:"weight_key" json:"weight_key,omitempty"`
}

var (
	groupNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,62})$`)
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// WithDefaults fills unset fields.
func (g GroupConfig) WithDefaults() GroupConfig {
	if g.FailAfter == 0 {
		g.FailAfter = 3
	}
	if g.RecoverAfter == 0 {
		g.RecoverAfter = 3
	}
	if g.Cooldown == 0 {
		g.Cooldown = model.Duration(60 * time.Second)
	}
	if g.HoldDown == 0 {
		g.HoldDown = model.Duration(30 * time.Second)
	}
	if g.MinDwell == 0 {
		g.MinDwell = model.Duration(30 * time.Second)
	}
	if g.FailBelow == 0 {
		g.FailBelow = 40
	}
	if g.RecoverAbove == 0 {
		g.RecoverAbove = 80
	}
	if g.WeightStep == 0 {
		g.WeightStep = 10
	}
	if g.DNS != nil {
		d := *g.DNS
		if d.RecordType == "" {
			d.RecordType = "A"
		}
		if d.TTL == 0 {
			d.TTL = 30
		}
		if d.WeightKey == "" {
			d.WeightKey = "aws/weight"
		}
		if d.Name == "" {
			d.Name = "fleetgate-" + g.Name
		}
		g.DNS = &d
	}
	return g
}

// Validate names the first bad field by its path relative to the failover:
// section ("groups[0] (eu).mode: ..."). Whether the clusters exist is
// CheckClusters's.
func (c *Config) Validate() error {
	names := map[string]bool{}
	for i, g := range c.Groups {
		f := fmt.Sprintf("groups[%d]", i)
		if !groupNameRE.MatchString(g.Name) {
			return fmt.Errorf("%s.name: %q is not a valid group name", f, g.Name)
		}
		if names[g.Name] {
			return fmt.Errorf("%s.name: %q is used twice", f, g.Name)
		}
		names[g.Name] = true
		f = fmt.Sprintf("%s (%s)", f, g.Name)
		switch g.Mode {
		case ActiveActive, ActivePassive, Hybrid:
		default:
			return fmt.Errorf("%s.mode: %q is not one of active-active, active-passive, hybrid", f, g.Mode)
		}
		if len(g.Clusters) == 0 {
			return fmt.Errorf("%s.clusters: a group needs at least one cluster", f)
		}
		if g.Mode == ActiveActive && len(g.Standby) > 0 {
			return fmt.Errorf("%s.standby: active-active groups have no standbys; use mode hybrid", f)
		}
		members := append(append([]string{}, g.Clusters...), g.Standby...)
		seen := map[string]bool{}
		for j, cl := range members {
			if seen[cl] {
				return fmt.Errorf("%s: cluster %q is listed twice", memberField(f, g, j), cl)
			}
			seen[cl] = true
		}
		switch {
		case g.FailAfter < 0:
			return fmt.Errorf("%s.fail_after: must be at least 1, got %d", f, g.FailAfter)
		case g.RecoverAfter < 0:
			return fmt.Errorf("%s.recover_after: must be at least 1, got %d", f, g.RecoverAfter)
		case g.Cooldown < 0:
			return fmt.Errorf("%s.cooldown: must not be negative", f)
		case g.HoldDown < 0:
			return fmt.Errorf("%s.hold_down: must not be negative", f)
		case g.MinDwell < 0:
			return fmt.Errorf("%s.min_dwell: must not be negative", f)
		case g.FailBelow < 0 || g.FailBelow > 100:
			return fmt.Errorf("%s.fail_below: must be in [0, 100], got %g", f, g.FailBelow)
		case g.RecoverAbove < 0 || g.RecoverAbove > 100:
			return fmt.Errorf("%s.recover_above: must be in [0, 100], got %g", f, g.RecoverAbove)
		case g.WeightStep < 0 || g.WeightStep > 100:
			return fmt.Errorf("%s.weight_step: must be in [0, 100], got %g", f, g.WeightStep)
		}
		d := g.WithDefaults()
		if d.RecoverAbove <= d.FailBelow {
			return fmt.Errorf("%s.recover_above: must be above fail_below (%g) for hysteresis, got %g", f, d.FailBelow, d.RecoverAbove)
		}
		if g.DNS != nil {
			dn := d.DNS
			switch {
			case dn.Namespace == "":
				return fmt.Errorf("%s.dns.namespace: empty", f)
			case !dnsLabelRE.MatchString(dn.Name):
				return fmt.Errorf("%s.dns.name: %q is not a valid object name", f, dn.Name)
			case !dnsLabelRE.MatchString(dn.Hostname):
				return fmt.Errorf("%s.dns.hostname: %q is not a valid DNS name", f, dn.Hostname)
			case dn.RecordType != "A" && dn.RecordType != "AAAA" && dn.RecordType != "CNAME":
				return fmt.Errorf("%s.dns.record_type: %q is not one of A, AAAA, CNAME", f, dn.RecordType)
			case dn.TTL < 0:
				return fmt.Errorf("%s.dns.ttl: must be positive, got %d", f, dn.TTL)
			}
			// In key order and in the group's order, so that the same file
			// always names the same cluster.
			for _, cl := range slices.Sorted(maps.Keys(dn.Targets)) {
				if !seen[cl] {
					return fmt.Errorf("%s.dns.targets.%s: cluster %q is not in the group", f, cl, cl)
				}
				if len(dn.Targets[cl]) == 0 {
					return fmt.Errorf("%s.dns.targets.%s: no targets", f, cl)
				}
			}
			for _, cl := range members {
				if _, ok := dn.Targets[cl]; !ok {
					return fmt.Errorf("%s.dns.targets: cluster %q of the group has no targets", f, cl)
				}
			}
		}
	}
	return nil
}

// CheckClusters names the first cluster of a group that known (the
// clusters: section) does not have, by its path relative to the failover:
// section ("groups[0] (eu).standby[1]: unknown cluster ...").
func (c *Config) CheckClusters(known func(string) bool) error {
	for i, g := range c.Groups {
		f := fmt.Sprintf("groups[%d] (%s)", i, g.Name)
		for j, cl := range append(append([]string{}, g.Clusters...), g.Standby...) {
			if !known(cl) {
				return fmt.Errorf("%s: unknown cluster %q", memberField(f, g, j), cl)
			}
		}
	}
	return nil
}

// memberField is the path of the group's j-th member: clusters then standby.
func memberField(f string, g GroupConfig, j int) string {
	if j >= len(g.Clusters) {
		return fmt.Sprintf("%s.standby[%d]", f, j-len(g.Clusters))
	}
	return fmt.Sprintf("%s.clusters[%d]", f, j)
}
