// Package httpapi writes the answers of fleetgate's own JSON API
// (/api/v1/clusters, /api/v1/health, /api/v1/failover/…, and the query
// APIs) in Prometheus's
// envelope, so a client of Prometheus's HTTP API reads them the same way:
// {"status":"success","data":…} or {"status":"error","errorType":…,"error":…}.
// It imports nothing of fleetgate, so every package that serves HTTP may use it.
package httpapi

import (
	"encoding/json"
	"net/http"
)

// Mux is where routes are mounted (an *http.ServeMux, or a wrapper that
// adds authentication).
type Mux interface {
	Handle(pattern string, h http.Handler)
	HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request))
}

// Error types of the error envelope (Prometheus's names where it has one).
const (
	ErrBadData     = "bad_data"
	ErrNotFound    = "not_found"
	ErrUnavailable = "unavailable"
)

// WriteJSON writes v as a JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteSuccess writes data in the success envelope (200).
func WriteSuccess(w http.ResponseWriter, data any) {
	WriteJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
		Data   any    `json:"data"`
	}{"success", data})
}

// WriteError writes the error envelope with status.
func WriteError(w http.ResponseWriter, status int, errType, msg string) {
	WriteJSON(w, status, struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", errType, msg})
}
