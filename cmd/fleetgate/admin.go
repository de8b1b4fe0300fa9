package main

import (
	"fmt"
	"net/http"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// maxReason is the largest free-text field (a reason, a replica name) of
// an admin request body, in bytes.
const maxReason = 1 << 10

// checkReason refuses a free-text field longer than maxReason.
func checkReason(w http.ResponseWriter, field, s string) bool {
	if len(s) > maxReason {
		httpapi.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("%s: %d bytes, at most %d", field, len(s), maxReason))
		return false
	}
	return true
}

// checkClusters refuses cluster names the registry does not know.
func checkClusters(w http.ResponseWriter, reg *fleet.Registry, field string, names []string) bool {
	for i, n := range names {
		if reg.Get(n) == nil {
			httpapi.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("%s[%d]: unknown cluster %q", field, i, n))
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
