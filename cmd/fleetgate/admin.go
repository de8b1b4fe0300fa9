package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/query"
)

// Limits of admin request bodies.
const (
	maxAdminBody = 64 << 10 // bytes of a body
	maxReason    = 1 << 10  // bytes of a reason (or a replica name)
)

// decodeAdminBody decodes the JSON body of an admin request into v and
// writes the error itself when it returns false: a body must be
// application/json (415), at most 64 KiB (413), one JSON object with no
// unknown fields and nothing after it (400). No body at all leaves v as it
// is (fine where nothing is needed).
func decodeAdminBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		query.WriteError(w, http.StatusRequestTimeout, "bad_data", fmt.Sprintf("request body: not received in time: %v", err))
		return false
	case errors.As(err, &tooLarge):
		query.WriteError(w, http.StatusRequestEntityTooLarge, "bad_data", fmt.Sprintf("request body: more than %d bytes", maxAdminBody))
		return false
	case err != nil:
		query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("request body: %v", err))
		return false
	case len(bytes.TrimSpace(body)) == 0:
		return true
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		query.WriteError(w, http.StatusUnsupportedMediaType, "bad_data",
			fmt.Sprintf("Content-Type %q: the request body must be application/json", r.Header.Get("Content-Type")))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("request body: %v", err))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		query.WriteError(w, http.StatusBadRequest, "bad_data", "request body: data after the JSON object")
		return false
	}
	return true
}

// checkReason refuses a free-text field longer than maxReason.
func checkReason(w http.ResponseWriter, field, s string) bool {
	if len(s) > maxReason {
		query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("%s: %d bytes, at most %d", field, len(s), maxReason))
		return false
	}
	return true
}

// checkClusters refuses cluster names the registry does not know.
func checkClusters(w http.ResponseWriter, reg *fleet.Registry, field string, names []string) bool {
	for i, n := range names {
		if reg.Get(n) == nil {
			query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("%s[%d]: unknown cluster %q", field, i, n))
			return false
		}
	}
	return true
}

// actor is the name of the principal of an admin request.
func actor(r *http.Request) string {
	p, _ := access.PrincipalFrom(r.Context())
	return p.Name
}
