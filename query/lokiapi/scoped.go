package lokiapi

import (
	"context"
	"net/http"
	"slices"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// A reader's scope reaches the Loki read API the way it reaches PromQL: the
// cluster matcher is injected into every stream selector.

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
func (a *API) logStore(w http.ResponseWriter, r *http.Request) (LogStore, bool) {
	scope, ok := access.ScopeFrom(r.Context())
	if !ok {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", access.ErrNoScope.Error())
		return nil, false
	}
	if scope.IsAll() {
		return a.store, true
	}
	return scopedLogs{st: a.store, m: scope.Matcher()}, true
}
