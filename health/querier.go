// Package health scores every cluster of the fleet from PromQL signals and
// the freshness of its telemetry. It reads through a Querier, so the same
// code runs on the embedded engine and on a remote Prometheus-compatible API.
package health

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
)

// Querier runs PromQL. It is all health (and the DR drill) needs from the
// query layer.
type Querier interface {
	// Instant evaluates expr at ts. A scalar result is returned as a
	// one-element vector without labels.
	Instant(ctx context.Context, expr string, ts time.Time) (model.Vector, error)
	// Range evaluates expr over [start, end] every step.
	Range(ctx context.Context, expr string, start, end time.Time, step time.Duration) (model.Matrix, error)
}

// EngineQuerier runs queries on an embedded PromQL engine over a Queryable.
type EngineQuerier struct {
	Engine    *promql.Engine
	Queryable storage.Queryable
}

// NewEngineQuerier adapts an embedded engine.
func NewEngineQuerier(e *promql.Engine, q storage.Queryable) *EngineQuerier {
	return &EngineQuerier{Engine: e, Queryable: q}
}

// Instant implements Querier.
func (e *EngineQuerier) Instant(ctx context.Context, expr string, ts time.Time) (model.Vector, error) {
	q, err := e.Engine.NewInstantQuery(ctx, e.Queryable, nil, expr, ts)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", expr, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, fmt.Errorf("evaluating %q: %w", expr, res.Err)
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		out := make(model.Vector, 0, len(v))
		for _, s := range v {
			if s.H != nil {
				continue // histograms have no single value to score
			}
			out = append(out, &model.Sample{Metric: toMetric(s.Metric), Value: model.SampleValue(s.F), Timestamp: model.Time(s.T)})
		}
		return out, nil
	case promql.Scalar:
		return model.Vector{{Metric: model.Metric{}, Value: model.SampleValue(v.V), Timestamp: model.Time(v.T)}}, nil
	default:
		return nil, fmt.Errorf("evaluating %q: result is a %s, want a vector or scalar", expr, res.Value.Type())
	}
}

// Range implements Querier.
func (e *EngineQuerier) Range(ctx context.Context, expr string, start, end time.Time, step time.Duration) (model.Matrix, error) {
	q, err := e.Engine.NewRangeQuery(ctx, e.Queryable, nil, expr, start, end, step)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", expr, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, fmt.Errorf("evaluating %q: %w", expr, res.Err)
	}
	m, ok := res.Value.(promql.Matrix)
	if !ok {
		return nil, fmt.Errorf("evaluating %q: result is a %s, want a matrix", expr, res.Value.Type())
	}
	out := make(model.Matrix, 0, len(m))
	for _, s := range m {
		ss := &model.SampleStream{Metric: toMetric(s.Metric)}
		for _, p := range s.Floats {
			ss.Values = append(ss.Values, model.SamplePair{Timestamp: model.Time(p.T), Value: model.SampleValue(p.F)})
		}
		out = append(out, ss)
	}
	return out, nil
}

func toMetric(ls labels.Labels) model.Metric {
	m := make(model.Metric, ls.Len())
	ls.Range(func(l labels.Label) { m[model.LabelName(l.Name)] = model.LabelValue(l.Value) })
	return m
}

// APIQuerier runs queries on a remote Prometheus-compatible HTTP API
// (Prometheus, Thanos, Mimir, VictoriaMetrics).
type APIQuerier struct {
	api promv1.API
}

// NewAPIQuerier builds a client for address; rt may be nil for the default transport.
func NewAPIQuerier(address string, rt http.RoundTripper) (*APIQuerier, error) {
	c, err := api.NewClient(api.Config{Address: address, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("querier address %q: %w", address, err)
	}
	return &APIQuerier{api: promv1.NewAPI(c)}, nil
}

// Instant implements Querier.
func (a *APIQuerier) Instant(ctx context.Context, expr string, ts time.Time) (model.Vector, error) {
	v, _, _, err := a.api.Query(ctx, expr, ts)
	if err != nil {
		return nil, fmt.Errorf("evaluating %q: %w", expr, err)
	}
	switch r := v.(type) {
	case model.Vector:
		return r, nil
	case *model.Scalar:
		return model.Vector{{Metric: model.Metric{}, Value: r.Value, Timestamp: r.Timestamp}}, nil
	default:
		return nil, fmt.Errorf("evaluating %q: result is a %s, want a vector or scalar", expr, v.Type())
	}
}

// Range implements Querier.
func (a *APIQuerier) Range(ctx context.Context, expr string, start, end time.Time, step time.Duration) (model.Matrix, error) {
	v, _, _, err := a.api.QueryRange(ctx, expr, promv1.Range{Start: start, End: end, Step: step})
	if err != nil {
		return nil, fmt.Errorf("evaluating %q: %w", expr, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("evaluating %q: result is a %s, want a matrix", expr, v.Type())
	}
	return m, nil
}
