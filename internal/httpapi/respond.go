// Package httpapi holds what fleetgate's JSON HTTP APIs share: Prometheus's
// response envelope ({"status":"success","data":…} and
// {"status":"error","errorType":…,"error":…}) and the route registrar the
// packages that serve routes mount them on.
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

// WriteJSON writes v as the response body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// success is Prometheus's JSON success envelope, status first.
type success struct {
	Status string `json:"status"`
	Data   any    `json:"data"`
}

// WriteSuccess writes data in Prometheus's success envelope.
func WriteSuccess(w http.ResponseWriter, data any) {
	WriteJSON(w, http.StatusOK, success{Status: "success", Data: data})
}

// WriteError writes Prometheus's JSON error shape with the given status.
func WriteError(w http.ResponseWriter, status int, errType, msg string) {
	WriteJSON(w, status, struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", errType, msg})
}
