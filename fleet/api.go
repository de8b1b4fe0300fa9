package fleet

import (
	"net/http"

	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// StatusHandler serves GET /api/v1/clusters: the status of every cluster
// the caller may see. visible decides that (cmd/fleetgate passes
// access.Visible: access imports fleet, so fleet cannot ask it itself).
func (r *Registry) StatusHandler(visible func(req *http.Request, cluster string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		out := []Status{}
		for _, s := range r.Statuses() {
			if visible(req, s.Name) {
				out = append(out, s)
			}
		}
		httpapi.WriteSuccess(w, out)
	})
}
