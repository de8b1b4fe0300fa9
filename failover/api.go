package failover

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// API serves a controller's state and the operator actions over HTTP.
// The state spans clusters (groups, events, drill reports), so cmd/fleetgate
// mounts the read handlers for callers who see every cluster
// (access.RequireAllClusters) and the actions for admins, whose bodies are
// access.DecodeAdminBody's. The patterns named on each handler are the
// ones it is mounted on.
type API struct {
	ctrl   *Controller
	reg    *fleet.Registry
	health HealthView
	q      health.Querier
}

// NewAPI serves ctrl over the clusters of reg; drills read h and q.
func NewAPI(ctrl *Controller, reg *fleet.Registry, h HealthView, q health.Querier) *API {
	return &API{ctrl: ctrl, reg: reg, health: h, q: q}
}

// Events serves GET /api/v1/failover/events?after=ID&group=NAME&limit=N
// (1000 by default, at most 10000).
func (a *API) Events(w http.ResponseWriter, r *http.Request) {
	var after uint64
	limit := 1000
	qs := r.URL.Query()
	if s := qs.Get("after"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, fmt.Sprintf("after: %q is not an event id", s))
			return
		}
		after = v
	}
	if s := qs.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 10000 {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, fmt.Sprintf("limit: %q is not a number in [1, 10000]", s))
			return
		}
		limit = v
	}
	httpapi.WriteSuccess(w, a.ctrl.Events(after, qs.Get("group"), limit))
}

// Groups serves GET /api/v1/failover/groups: every group's state.
func (a *API) Groups(w http.ResponseWriter, _ *http.Request) {
	httpapi.WriteSuccess(w, a.ctrl.Status())
}

// opRequest is the body of freeze and override.
type opRequest struct {
	Reason   string   `json:"reason"`
	Clusters []string `json:"clusters"`
	Duration string   `json:"duration"`
}

// decodeOp decodes and checks an operator action's body; until is zero
// without a duration.
func (a *API) decodeOp(w http.ResponseWriter, r *http.Request) (opRequest, time.Time, bool) {
	var req opRequest
	if !access.DecodeAdminBody(w, r, &req) || !access.CheckAdminText(w, "reason", req.Reason) || !a.checkClusters(w, "clusters", req.Clusters) {
		return req, time.Time{}, false
	}
	var until time.Time
	if req.Duration != "" {
		d, err := model.ParseDuration(req.Duration)
		if err != nil || d <= 0 {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, fmt.Sprintf("duration: %q is not a positive duration", req.Duration))
			return req, time.Time{}, false
		}
		until = time.Now().Add(time.Duration(d))
	}
	return req, until, true
}

// checkClusters refuses cluster names the registry does not know.
func (a *API) checkClusters(w http.ResponseWriter, field string, names []string) bool {
	for i, n := range names {
		if a.reg.Get(n) == nil {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, fmt.Sprintf("%s[%d]: unknown cluster %q", field, i, n))
			return false
		}
	}
	return true
}

// noBody refuses a body on an action that takes none (DELETE).
func noBody(w http.ResponseWriter, r *http.Request) bool {
	var none struct{}
	return access.DecodeAdminBody(w, r, &none)
}

// respond answers an operator action with its event or its error.
func respond(w http.ResponseWriter, ev Event, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, httpapi.ErrNotFound, err.Error())
	case errors.Is(err, ErrBadRequest):
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, err.Error())
	case err != nil:
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.ErrUnavailable, err.Error())
	default:
		httpapi.WriteSuccess(w, ev)
	}
}

// Freeze serves POST /api/v1/failover/groups/{name}/freeze with the body
// {"reason": "…", "duration": "1h"} (both optional).
func (a *API) Freeze(w http.ResponseWriter, r *http.Request) {
	req, until, ok := a.decodeOp(w, r)
	if !ok {
		return
	}
	ev, err := a.ctrl.Freeze(r.PathValue("name"), access.Actor(r), req.Reason, until)
	respond(w, ev, err)
}

// Unfreeze serves DELETE /api/v1/failover/groups/{name}/freeze (no body).
func (a *API) Unfreeze(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	ev, err := a.ctrl.Unfreeze(r.PathValue("name"), access.Actor(r))
	respond(w, ev, err)
}

// Override serves POST /api/v1/failover/groups/{name}/override with the
// body {"clusters": ["…"], "reason": "…", "duration": "1h"}.
func (a *API) Override(w http.ResponseWriter, r *http.Request) {
	req, until, ok := a.decodeOp(w, r)
	if !ok {
		return
	}
	ev, err := a.ctrl.Override(r.PathValue("name"), access.Actor(r), req.Clusters, req.Reason, until)
	respond(w, ev, err)
}

// ClearOverride serves DELETE /api/v1/failover/groups/{name}/override (no body).
func (a *API) ClearOverride(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	ev, err := a.ctrl.ClearOverride(r.PathValue("name"), access.Actor(r))
	respond(w, ev, err)
}

// SimulateDrill serves GET /api/v1/failover/drill?cluster=NAME: the drill
// report of NAME going dark now (nothing is logged or sent, as for POST).
func (a *API) SimulateDrill(w http.ResponseWriter, r *http.Request) {
	a.drill(w, r, r.URL.Query().Get("cluster"))
}

// Drill serves POST /api/v1/failover/drill, the cluster named by
// ?cluster=NAME or the body {"cluster": "NAME"} (both must agree).
func (a *API) Drill(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Cluster string `json:"cluster"`
	}
	if !access.DecodeAdminBody(w, r, &req) {
		return
	}
	name := r.URL.Query().Get("cluster")
	if req.Cluster != "" {
		if name != "" && name != req.Cluster {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, fmt.Sprintf("cluster: %q in the URL and %q in the body", name, req.Cluster))
			return
		}
		name = req.Cluster
	}
	a.drill(w, r, name)
}

func (a *API) drill(w http.ResponseWriter, r *http.Request, name string) {
	if name == "" {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.ErrBadData, "cluster: missing (the cluster to take dark)")
		return
	}
	if a.reg.Get(name) == nil {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.ErrNotFound, fmt.Sprintf("cluster %q is not known", name))
		return
	}
	rep, err := a.ctrl.Drill(r.Context(), a.health, a.q, name)
	if errors.Is(err, ErrNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.ErrNotFound, err.Error())
		return
	}
	if err != nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.ErrUnavailable, err.Error())
		return
	}
	httpapi.WriteSuccess(w, rep)
}
