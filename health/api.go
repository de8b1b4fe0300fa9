package health

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// API serves an evaluator's verdicts over HTTP. Every handler is scoped: a
// cluster outside the caller's scope (access.Visible) is not known to it.
// cmd/fleetgate mounts the handlers with their access class; the patterns
// named on each handler are the ones it is mounted on.
type API struct {
	eval  *Evaluator
	known func(cluster string) bool
}

// NewAPI serves eval's verdicts on the clusters of reg.
func NewAPI(eval *Evaluator, reg *fleet.Registry) *API {
	return &API{eval: eval, known: func(name string) bool { return reg.Get(name) != nil }}
}

// result is the verdict on a cluster the caller may see; a known cluster
// not evaluated yet is unknown.
func (a *API) result(r *http.Request, name string) (Result, bool) {
	if !access.Visible(r, name) || !a.known(name) {
		return Result{}, false
	}
	res, ok := a.eval.Result(name)
	if !ok {
		res = Result{Cluster: name, State: Unknown, Reason: "not evaluated yet", Signals: []SignalResult{}}
	}
	return res, true
}

// Cluster serves GET /api/v1/clusters/{name}/health: one cluster's verdict.
func (a *API) Cluster(w http.ResponseWriter, r *http.Request) {
	res, ok := a.result(r, r.PathValue("name"))
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.ErrNotFound, fmt.Sprintf("cluster %q is not known", r.PathValue("name")))
		return
	}
	httpapi.WriteSuccess(w, res)
}

// All serves GET /api/v1/health: the verdicts on the clusters the caller sees.
func (a *API) All(w http.ResponseWriter, r *http.Request) {
	out := []Result{}
	for _, res := range a.eval.Results() {
		if access.Visible(r, res.Cluster) {
			out = append(out, res)
		}
	}
	httpapi.WriteSuccess(w, out)
}

// Check serves GET /health/clusters/{name} for cloud DNS health checks
// (Route 53, Cloudflare, GCLB): 200 while the cluster is healthy or
// degraded, 503 when it is down or unknown, 404 when it is not known.
func (a *API) Check(w http.ResponseWriter, r *http.Request) {
	res, ok := a.result(r, r.PathValue("name"))
	if !ok {
		http.Error(w, fmt.Sprintf("cluster %q is not known", r.PathValue("name")), http.StatusNotFound)
		return
	}
	code := http.StatusOK
	if res.State == Down || res.State == Unknown {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"cluster": res.Cluster, "state": res.State, "score": res.Score, "reason": res.Reason})
}

// CheckHead serves HEAD /health/clusters/{name}: Check's status, no body.
func (a *API) CheckHead(w http.ResponseWriter, r *http.Request) {
	res, ok := a.result(r, r.PathValue("name"))
	switch {
	case !ok:
		w.WriteHeader(http.StatusNotFound)
	case res.State == Down || res.State == Unknown:
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		w.WriteHeader(http.StatusOK)
	}
}
