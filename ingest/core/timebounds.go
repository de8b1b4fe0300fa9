package core

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/model"
)

// The reasons (metric label values) a time bound refuses data with.
const (
	ReasonTooFarInFuture = "too_far_in_future"
	ReasonTooOld         = "too_old"
)

// TimeBounds is the time rule of ingest: data more than MaxFuture
// (ingest.max_future) ahead of now is refused as too_far_in_future on every
// path. Check adds, for log lines and spans, what the metrics path leaves to
// the TSDB (which judges age itself and, as Prometheus, takes samples before
// 1970): a time at or before 1970-01-01 (a missing or broken timestamp) and
// one older than MaxAge, when set, are refused as too_old.
type TimeBounds struct {
	MaxFuture time.Duration
	// MaxAge, when set, is how old data may be; MaxAgeKey names its
	// configuration key in the error (e.g. logs_storage.retention).
	MaxAge    time.Duration
	MaxAgeKey string
}

// epoch is the earliest time Check lets through (exclusive).
var epoch = time.Unix(0, 0)

// Latest is the latest time data may have at now.
func (b TimeBounds) Latest(now time.Time) time.Time { return now.Add(b.MaxFuture) }

// LatestMillis is Latest in milliseconds since the epoch, for a loop that
// compares sample timestamps without allocating.
func (b TimeBounds) LatestMillis(now time.Time) int64 { return b.Latest(now).UnixMilli() }

// FutureBound names the future bound and its value for an error message:
// "ingest.max_future (10m)".
func (b TimeBounds) FutureBound() string {
	return fmt.Sprintf("ingest.max_future (%s)", model.Duration(b.MaxFuture))
}

// Check judges one timestamp at now: nil when it is within the bounds,
// else a 400 *Error whose reason is too_far_in_future or too_old and whose
// message names the timestamp and the bound ("timestamp ... is more than
// ingest.max_future (10m) ahead of now"); the caller prefixes what it
// belongs to (the stream and line, the span and which end).
func (b TimeBounds) Check(t, now time.Time) *Error {
	switch {
	case t.After(b.Latest(now)):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonTooFarInFuture,
			Msg: fmt.Sprintf("timestamp %s is more than %s ahead of now", t.UTC().Format(time.RFC3339Nano), b.FutureBound())}
	case !t.After(epoch):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonTooOld,
			Msg: fmt.Sprintf("timestamp %s (%d ns) is not after 1970-01-01", t.UTC().Format(time.RFC3339Nano), t.UnixNano())}
	case b.MaxAge > 0 && t.Before(now.Add(-b.MaxAge)):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonTooOld,
			Msg: fmt.Sprintf("timestamp %s is older than %s (%s)", t.UTC().Format(time.RFC3339Nano), b.MaxAgeKey, model.Duration(b.MaxAge))}
	}
	return nil
}
