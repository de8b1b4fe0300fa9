package pipeline

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

// Exemplars are appended as Prometheus's remote-write receiver appends them
// (storage/remote/write_handler.go): sorted by timestamp, after the series'
// samples and histograms, to the series even when its samples were refused,
// and never failing the request. Refused exemplars are counted (metric and
// cluster rejections, reasons out_of_order_exemplar and invalid_exemplar) and
// left out of Written.Exemplars; out-of-order ones are also reported by
// OutOfOrderExemplars, for receivers that answer them with a 400 as
// Prometheus's remote-write 2.0 receiver does.

// exemplarReports bounds the out-of-order exemplar errors a batch keeps.
const exemplarReports = 10

// appendExemplars appends s.Exemplars to the series ref (or, if ref is 0 or
// unknown, the one labelled ls).
func (b *Batch) appendExemplars(c *fleet.Cluster, ref storage.SeriesRef, ls labels.Labels, s *Series, w *Written) error {
	if len(s.Exemplars) == 0 {
		return nil
	}
	// Exemplars more than ingest.max_future ahead are dropped, as
	// Prometheus's write handler drops them (its maxAheadTime).
	maxT := b.maxT
	ex := b.exBuf[:0]
	for _, e := range s.Exemplars {
		if e.Ts > maxT {
			b.refuseExemplar(c, "invalid_exemplar", 1, fmt.Errorf("exemplar of series %s at %s: %w: more than %s ahead of now",
				core.Abbrev(s.labels()), time.UnixMilli(e.Ts).UTC().Format(time.RFC3339Nano), storage.ErrOutOfBounds, b.p.bounds.FutureBound()))
			continue
		}
		ex = append(ex, e)
	}
	b.exBuf = ex
	if len(ex) == 0 {
		return nil
	}
	slices.SortFunc(ex, exemplar.Compare)
	app, ok := b.app.(storage.ExemplarAppenderV2)
	if !ok {
		b.refuseExemplar(c, "invalid_exemplar", len(ex), fmt.Errorf("%d exemplars of series %s: storage %T does not take exemplars", len(ex), core.Abbrev(s.labels()), b.app))
		return nil
	}
	_, err := app.AppendExemplars(ref, ls, ex)
	if errors.Is(err, storage.ErrNotFound) && ls.IsEmpty() {
		// A cached series reference that is no longer valid: go by labels.
		var perr *core.Error
		if ls, _, perr = b.stamp(s.labels()); perr == nil {
			_, err = app.AppendExemplars(0, ls, ex)
		}
	}
	var pe *storage.AppendPartialError
	switch {
	case err == nil:
		w.Exemplars += len(ex)
	case errors.As(err, &pe):
		w.Exemplars += len(ex) - len(pe.ExemplarErrors)
		for _, ee := range pe.ExemplarErrors {
			reason := "invalid_exemplar"
			if errors.Is(ee.Err, storage.ErrOutOfOrderExemplar) {
				reason = "out_of_order_exemplar"
			}
			b.refuseExemplar(c, reason, 1, fmt.Errorf("exemplar of series %s: %w", core.Abbrev(s.labels()), ee.Err))
		}
	default:
		// No series to attach them to (its samples were all refused, or
		// it only had exemplars), or a storage error Prometheus's receiver
		// does not fail the request for either.
		b.refuseExemplar(c, "invalid_exemplar", len(ex), fmt.Errorf("%d exemplars of series %s: %w", len(ex), core.Abbrev(s.labels()), err))
	}
	return nil
}

// refuseExemplar counts n refused exemplars without failing the batch.
func (b *Batch) refuseExemplar(c *fleet.Cluster, reason string, n int, err error) {
	name := "unknown"
	if c != nil {
		name = c.Name
		c.Rejected(reason, n, err.Error())
	}
	b.p.rejected.WithLabelValues(name, reason).Add(float64(n))
	if reason == "out_of_order_exemplar" {
		b.oooExemplars += n
		if len(b.oooExemplarErrs) < exemplarReports {
			b.oooExemplarErrs = append(b.oooExemplarErrs, err)
		}
	}
}

// OutOfOrderExemplars reports the exemplars storage refused as out of order
// (older than the series' newest exemplar), or nil. They do not fail the
// batch: the receiver decides.
func (b *Batch) OutOfOrderExemplars() error {
	if b.oooExemplars == 0 {
		return nil
	}
	return &core.Error{Status: http.StatusBadRequest, Reason: "out_of_order_exemplar",
		Msg: fmt.Sprintf("%d exemplars rejected: %v", b.oooExemplars, errors.Join(b.oooExemplarErrs...))}
}
