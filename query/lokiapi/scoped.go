package query

import (
	"context"
	"net/http"
	"slices"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/fleetgate/fleetgate/access"
)

// A reader's scope reaches the Loki and Tempo read APIs the way it reaches
// PromQL: the cluster matcher is injected into every stream selector, and
// trace spans of other clusters are never read.

// scopedLogs injects the scope's cluster matcher into every selector.
type scopedLogs struct {
	st LogStore
	m  *labels.Matcher
}

func (s scopedLogs) Select(ctx context.Context, mint, maxt int64, ms []*labels.Matcher, newestFirst bool, fn func(ls labels.Labels, lstr string, e *push.Entry) error) error {
	return s.st.Select(ctx, mint, maxt, append(slices.Clip(ms), s.m), newestFirst, fn)
}

func (s scopedLogs) Series(mint, maxt int64, sets [][]*labels.Matcher) []labels.Labels {
	if len(sets) == 0 {
		return s.st.Series(mint, maxt, [][]*labels.Matcher{{s.m}})
	}
	scoped := make([][]*labels.Matcher, len(sets))
	for i, ms := range sets {
		scoped[i] = append(slices.Clip(ms), s.m)
	}
	return s.st.Series(mint, maxt, scoped)
}

// logStore is the log store as the caller of r may see it; ok is false
// (and a 500 written) when r carries no scope.
func (a *LokiAPI) logStore(w http.ResponseWriter, r *http.Request) (LogStore, bool) {
	scope, ok := access.ScopeFrom(r.Context())
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", access.ErrNoScope.Error())
		return nil, false
	}
	if scope.IsAll() {
		return a.store, true
	}
	return scopedLogs{st: a.store, m: scope.Matcher()}, true
}

// resourceVisible is the scope as a filter of OTLP resources by their
// `cluster` attribute; nil for every cluster.
func resourceVisible(scope access.Scope) func(pcommon.Map) bool {
	if scope.IsAll() {
		return nil
	}
	return func(res pcommon.Map) bool {
		v, ok := res.Get(access.ClusterLabel)
		return ok && scope.Allows(v.AsString())
	}
}

// traceScope returns the resource filter of r's scope; ok is false (and a
// 500 written) when r carries no scope.
func traceScope(w http.ResponseWriter, r *http.Request) (func(pcommon.Map) bool, bool) {
	scope, ok := access.ScopeFrom(r.Context())
	if !ok {
		http.Error(w, access.ErrNoScope.Error(), http.StatusInternalServerError)
		return nil, false
	}
	return resourceVisible(scope), true
}
