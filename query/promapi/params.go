package promapi

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/internal/httpapi"
	"github.com/fleetgate/fleetgate/query/federation"
)

// parseRequestOptions reads the Thanos parameters partial_response, dedup
// and replicaLabels[] of a request.
func parseRequestOptions(r *http.Request) (federation.RequestOptions, error) {
	var o federation.RequestOptions
	boolParam := func(name string) (*bool, error) {
		s := r.Form.Get(name)
		if s == "" {
			return nil, nil
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("invalid parameter %q: %q is not a boolean", name, s)
		}
		return &b, nil
	}
	var err error
	if o.PartialResponse, err = boolParam("partial_response"); err != nil {
		return o, err
	}
	if o.Dedup, err = boolParam("dedup"); err != nil {
		return o, err
	}
	for _, name := range []string{"replicaLabels[]", "replicaLabels"} {
		for _, l := range r.Form[name] {
			if !model.UTF8Validation.IsValidLabelName(l) || l == "" {
				return o, fmt.Errorf("invalid parameter %q: %q is not a valid label name", name, l)
			}
			o.ReplicaLabels = append(o.ReplicaLabels, l)
		}
	}
	return o, nil
}

// withRequestOptions parses the Thanos parameters into the request context
// for the federated querier; a bad value is a 400 naming the parameter.
func withRequestOptions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("parsing form: %v", err))
			return
		}
		o, err := parseRequestOptions(r)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "bad_data", err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(federation.WithRequestOptions(r.Context(), o)))
	})
}

// registerQuery mounts the Prometheus API behind the Thanos parameter
// middleware, with the results cache in front of query_range.
func (a *API) registerQuery(mux httpapi.Mux) {
	mux.Handle("/api/v1/", withRequestOptions(a.router))
	if a.cache != nil {
		h := withRequestOptions(a.cache.handler(a.router))
		mux.Handle("GET /api/v1/query_range", h)
		mux.Handle("POST /api/v1/query_range", h)
	}
}
