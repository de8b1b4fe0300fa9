package main

import (
	"net/http"

	"github.com/fleetgate/fleetgate/access"
)

// The HA pin handler's admin body helpers (federation.go); they go with it
// when HA tracking moves to its own package.

// checkReason refuses a free-text field longer than access.MaxAdminText.
func checkReason(w http.ResponseWriter, field, s string) bool {
	return access.CheckAdminText(w, field, s)
}

// actor is the name of the principal of an admin request.
func actor(r *http.Request) string { return access.Actor(r) }
