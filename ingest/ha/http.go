package ha

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// API serves the HA tracker's HTTP endpoints; cmd/fleetgate mounts them
// with their access class:
//
//	GET  /api/v1/ha                 read: the HA groups of the caller's clusters
//	POST /api/v1/ha/{cluster}/pin   admin: pin a replica, or unpin
//
// Answers use Prometheus's JSON envelope. A nil tracker (ha.enabled: false)
// answers "enabled": false and refuses pins.
type API struct {
	t      *Tracker
	reg    *fleet.Registry
	logger *slog.Logger
}

// NewAPI builds the endpoints of t (nil: HA off) for the clusters of reg.
func NewAPI(t *Tracker, reg *fleet.Registry, logger *slog.Logger) *API {
	return &API{t: t, reg: reg, logger: logger}
}

// Status handles GET /api/v1/ha: the groups of the clusters the caller may read.
func (a *API) Status(w http.ResponseWriter, r *http.Request) {
	scope, _ := access.ScopeFrom(r.Context())
	groups := []GroupStatus{}
	for _, g := range a.t.Status() {
		if scope.Allows(g.Cluster) {
			groups = append(groups, g)
		}
	}
	httpapi.WriteSuccess(w, map[string]any{"enabled": a.t != nil, "groups": groups})
}

// pinRequest is the JSON body of POST /api/v1/ha/{cluster}/pin.
type pinRequest struct {
	Replica string `json:"replica"`
	Group   string `json:"group"`
	Unpin   bool   `json:"unpin"`
	// Force pins a replica that was never seen for the cluster and group
	// (its samples will be the only ones accepted once it sends).
	Force bool `json:"force"`
}

// Pin handles POST /api/v1/ha/{cluster}/pin with a JSON body
// {"replica": "r1", "group": "", "force": false} or {"unpin": true}.
func (a *API) Pin(w http.ResponseWriter, r *http.Request) {
	var req pinRequest
	if !access.DecodeAdminBody(w, r, &req) || !access.CheckAdminText(w, "replica", req.Replica) || !access.CheckAdminText(w, "group", req.Group) {
		return
	}
	cluster := r.PathValue("cluster")
	if a.reg.Get(cluster) == nil {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.ErrNotFound, fmt.Sprintf("cluster %q is not configured", cluster))
		return
	}
	switch {
	case req.Unpin && req.Replica != "":
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, "set either replica (to pin) or unpin: true, not both")
		return
	case !req.Unpin && req.Replica == "":
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, "replica: must be set (or unpin: true to unpin)")
		return
	case !req.Unpin && !req.Force && !a.seen(cluster, req.Group, req.Replica):
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, fmt.Sprintf(
			"replica: %q was never seen for cluster %q (group %q); pinning it would drop every sample of the cluster until it sends — set \"force\": true to pin it anyway",
			req.Replica, cluster, req.Group))
		return
	}
	if err := a.t.Pin(cluster, req.Group, req.Replica); err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadPin):
			status = http.StatusBadRequest
		case errors.Is(err, ErrPinNotSaved):
			status = http.StatusServiceUnavailable // not applied: retry
		}
		httpapi.WriteError(w, status, httpapi.ErrBadData, err.Error())
		return
	}
	a.logger.Info("HA replica pinned", "cluster", cluster, "group", req.Group, "replica", req.Replica, "unpin", req.Unpin, "force", req.Force, "actor", access.Actor(r))
	httpapi.WriteSuccess(w, a.t.Status())
}

// seen reports whether the tracker has seen replica for cluster and group.
func (a *API) seen(cluster, group, replica string) bool {
	for _, g := range a.t.Status() {
		if g.Cluster == cluster && g.Group == group {
			_, ok := g.Replicas[replica]
			return ok || g.Elected == replica
		}
	}
	return false
}
