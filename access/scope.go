// Package access decides who is calling fleetgate and what they may do:
// admins change state, readers see the clusters they are scoped to, and
// cluster ingest credentials grant neither. Readers are scoped by injecting
// a cluster matcher into every selector (as prom-label-proxy does), never by
// filtering answers afterwards.
package access

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// ClusterLabel is the label that carries cluster identity on every signal
// (the same as fleet.ClusterLabel).
const ClusterLabel = "cluster"

// Scope is the set of clusters a caller may see: every cluster, or a fixed
// set of names. The zero Scope sees nothing.
type Scope struct {
	all      bool
	clusters []string // sorted, unique
}

// All is the scope of every cluster.
func All() Scope { return Scope{all: true} }

// Clusters is the scope of the named clusters only; "*" among them means
// every cluster.
func Clusters(names ...string) Scope {
	if slices.Contains(names, "*") {
		return All()
	}
	cs := slices.Clone(names)
	slices.Sort(cs)
	return Scope{clusters: slices.Compact(cs)}
}

// IsAll reports whether the scope is every cluster.
func (s Scope) IsAll() bool { return s.all }

// Allows reports whether cluster is visible in the scope.
func (s Scope) Allows(cluster string) bool {
	if s.all {
		return true
	}
	_, ok := slices.BinarySearch(s.clusters, cluster)
	return ok
}

// String is "*" for every cluster, else the sorted names joined by ","; it
// identifies the scope in cache keys.
func (s Scope) String() string {
	if s.all {
		return "*"
	}
	return strings.Join(s.clusters, ",")
}

// nothing matches no string at all (an empty character class).
const nothing = `[^\x00-\x{10FFFF}]`

// Matcher is the matcher injected into every selector of a limited scope:
// cluster=~"a|b" with the names regexp-quoted (Prometheus anchors it). It is
// nil for All. An empty scope gets a matcher that matches nothing.
func (s Scope) Matcher() *labels.Matcher {
	if s.all {
		return nil
	}
	re := nothing
	if len(s.clusters) > 0 {
		q := make([]string, len(s.clusters))
		for i, c := range s.clusters {
			q[i] = regexp.QuoteMeta(c)
		}
		re = strings.Join(q, "|")
	}
	m, err := labels.NewMatcher(labels.MatchRegexp, ClusterLabel, re)
	if err != nil {
		// Quoted literals always compile; keep failing closed regardless.
		m = labels.MustNewMatcher(labels.MatchRegexp, ClusterLabel, nothing)
	}
	return m
}

// ResourceFilter is the scope as a filter of OTLP resources (logs, traces)
// by their `cluster` attribute: a resource without one belongs to no
// cluster and is not visible. It is nil for All.
func (s Scope) ResourceFilter() func(pcommon.Map) bool {
	if s.all {
		return nil
	}
	return func(res pcommon.Map) bool {
		v, ok := res.Get(ClusterLabel)
		return ok && s.Allows(v.AsString())
	}
}

type scopeKey struct{}

// WithScope returns ctx carrying s.
func WithScope(ctx context.Context, s Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

// ScopeFrom returns the scope carried by ctx; ok is false when there is none
// (callers must then fail closed).
func ScopeFrom(ctx context.Context) (Scope, bool) {
	s, ok := ctx.Value(scopeKey{}).(Scope)
	return s, ok
}

// Visible reports whether the caller of r may see cluster: false without a
// scope (fail closed). Handlers that list or show clusters filter with it.
func Visible(r *http.Request, cluster string) bool {
	s, _ := ScopeFrom(r.Context())
	return s.Allows(cluster)
}
