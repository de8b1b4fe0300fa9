package core

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error is an ingest error with the HTTP status it maps to. Every part of
// ingest returns it for what the sender did wrong or must wait for (4xx);
// a receiver maps it to its protocol's answer with ErrorStatus and
// ErrorRetryAfter.
type Error struct {
	Status int
	Reason string // metric label: conflict, invalid_labels, out_of_order, too_old, duplicate, limit, ...
	Msg    string
	// RetryAfter, for a 429, is when the sender may retry.
	RetryAfter time.Duration
	// Err is the wrapped cause, if any.
	Err error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Errorf is an *Error with status and reason whose message is formatted
// as fmt.Errorf does (a %w verb wraps the cause).
func Errorf(status int, reason, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Status: status, Reason: reason, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// ErrorStatus is the HTTP status for err: the one of *Error, 503 for an
// error that says when to retry (a store that cannot take writes now, see
// ErrorRetryAfter), or 500.
func ErrorStatus(err error) int {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Status
	}
	if _, ok := storeRetryAfter(err); ok {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrorRetryAfter is when the sender may retry: the delay of a 429 *Error,
// or of an error from a store that cannot take writes now (it has a
// RetryAfter() time.Duration method, ErrorStatus answers 503); else 0.
func ErrorRetryAfter(err error) time.Duration {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	if d, ok := storeRetryAfter(err); ok {
		return d
	}
	return 0
}

// storeRetryAfter is the delay of an error that says when to retry: nothing
// of the request was stored, the store is temporarily unavailable.
func storeRetryAfter(err error) (time.Duration, bool) {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfter(), true
	}
	return 0, false
}
