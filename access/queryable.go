package access

import (
	"context"
	"errors"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// ErrNoScope is returned by the scoped queryables when the context carries
// no scope: a caller that forgot to authenticate reads nothing.
var ErrNoScope = errors.New("access: no reader scope in the request context")

// NewQueryable wraps q so that every Select, LabelNames and LabelValues gets
// the matcher of the scope in its context (see Scope.Matcher). It fails
// closed: without a scope in the context every call is an error. Internal
// callers (health, drills) use the unwrapped q.
func NewQueryable(q storage.SampleAndChunkQueryable) storage.SampleAndChunkQueryable {
	return scopedQueryable{q}
}

type scopedQueryable struct {
	q storage.SampleAndChunkQueryable
}

func (s scopedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := s.q.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return scopedQuerier{q}, nil
}

func (s scopedQueryable) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	q, err := s.q.ChunkQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return scopedChunkQuerier{q}, nil
}

// inject returns ms with the scope's matcher added; empty reports a scope
// that can see nothing at all (the store need not be asked).
func inject(ctx context.Context, ms []*labels.Matcher) (out []*labels.Matcher, empty bool, err error) {
	s, ok := ScopeFrom(ctx)
	if !ok {
		return nil, false, ErrNoScope
	}
	if s.all {
		return ms, false, nil
	}
	if len(s.clusters) == 0 {
		return nil, true, nil
	}
	out = make([]*labels.Matcher, 0, len(ms)+1)
	out = append(out, ms...)
	return append(out, s.Matcher()), false, nil
}

type scopedLabels struct{ q storage.LabelQuerier }

func (s scopedLabels) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ms, empty, err := inject(ctx, ms)
	if err != nil || empty {
		return nil, nil, err
	}
	return s.q.LabelValues(ctx, name, hints, ms...)
}

func (s scopedLabels) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ms, empty, err := inject(ctx, ms)
	if err != nil || empty {
		return nil, nil, err
	}
	return s.q.LabelNames(ctx, hints, ms...)
}

func (s scopedLabels) Close() error { return s.q.Close() }

type scopedQuerier struct{ q storage.Querier }

func (s scopedQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	ms, empty, err := inject(ctx, ms)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	if empty {
		return storage.EmptySeriesSet()
	}
	return s.q.Select(ctx, sortSeries, hints, ms...)
}

func (s scopedQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return scopedLabels{s.q}.LabelValues(ctx, name, hints, ms...)
}

func (s scopedQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return scopedLabels{s.q}.LabelNames(ctx, hints, ms...)
}

func (s scopedQuerier) Close() error { return s.q.Close() }

type scopedChunkQuerier struct{ q storage.ChunkQuerier }

func (s scopedChunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	ms, empty, err := inject(ctx, ms)
	if err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	if empty {
		return storage.EmptyChunkSeriesSet()
	}
	return s.q.Select(ctx, sortSeries, hints, ms...)
}

func (s scopedChunkQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return scopedLabels{s.q}.LabelValues(ctx, name, hints, ms...)
}

func (s scopedChunkQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return scopedLabels{s.q}.LabelNames(ctx, hints, ms...)
}

func (s scopedChunkQuerier) Close() error { return s.q.Close() }

// NewExemplarQueryable wraps q so that every selector of an exemplar query
// gets the matcher of the scope in the context given to ExemplarQuerier. It
// fails closed like NewQueryable.
func NewExemplarQueryable(q storage.ExemplarQueryable) storage.ExemplarQueryable {
	return scopedExemplars{q}
}

type scopedExemplars struct{ q storage.ExemplarQueryable }

func (s scopedExemplars) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	sc, ok := ScopeFrom(ctx)
	if !ok {
		return nil, ErrNoScope
	}
	eq, err := s.q.ExemplarQuerier(ctx)
	if err != nil || sc.all {
		return eq, err
	}
	return scopedExemplarQuerier{q: eq, scope: sc}, nil
}

type scopedExemplarQuerier struct {
	q     storage.ExemplarQuerier
	scope Scope
}

func (s scopedExemplarQuerier) Select(start, end int64, sets ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	if len(s.scope.clusters) == 0 || len(sets) == 0 {
		return []exemplar.QueryResult{}, nil
	}
	m := s.scope.Matcher()
	scoped := make([][]*labels.Matcher, len(sets))
	for i, ms := range sets {
		scoped[i] = append(append(make([]*labels.Matcher, 0, len(ms)+1), ms...), m)
	}
	return s.q.Select(start, end, scoped...)
}
