package main

import (
	"io"
	"net/http"
	"time"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/failover"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// routeClass says who may call a route.
type routeClass string

const (
	// classPublic: anyone (liveness and readiness).
	classPublic routeClass = "public"
	// classIngest: senders; the receivers prove the cluster themselves.
	classIngest routeClass = "ingest"
	// classRead: admins, readers (scoped) and, with anonymous read on, anyone.
	classRead routeClass = "read"
	// classAdmin: admins only.
	classAdmin routeClass = "admin"
	// classHealthCheck: like classRead, or public with auth.public_health_checks.
	classHealthCheck routeClass = "health_check"
)

// route is one registration on the main listener.
type route struct {
	pattern string
	class   routeClass
}

// routes mounts every route of the main listener with its access class
// and body read deadline. Its list is the one place that knows every
// route: the route-walk test walks it.
type routes struct {
	mux  *http.ServeMux
	auth *access.Authenticator
	// limits are the largest body each class accepts (bytes); they scale
	// the body read deadline.
	limits map[routeClass]int64
	// bodyBase is the time any body may take besides its size (10 s).
	bodyBase time.Duration
	// csrf refuses cross-origin browser requests on admin routes.
	csrf *http.CrossOriginProtection
	list []route
}

func newRoutes(auth *access.Authenticator, ingestLimit int64) *routes {
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteError(w, http.StatusForbidden, "forbidden",
			"cross-origin request refused: a web page of another origin may not change fleetgate's state")
	}))
	return &routes{mux: http.NewServeMux(), auth: auth, bodyBase: 10 * time.Second, csrf: csrf, limits: map[routeClass]int64{
		classPublic: access.MaxAdminBody, classAdmin: access.MaxAdminBody, classHealthCheck: access.MaxAdminBody,
		classRead:   10 << 20, // net/http's own bound on a parsed form body
		classIngest: ingestLimit,
	}}
}

// mountClusters mounts the cluster registry: read, only the caller's clusters.
func (rt *routes) mountClusters(reg *fleet.Registry) {
	rt.on(classRead).Handle("GET /api/v1/clusters", reg.StatusHandler(access.Visible))
}

// mountHealth mounts health: read, scoped (a cluster outside the caller's
// scope is not known to it); the DNS health check is a read, or public with
// auth.public_health_checks.
func (rt *routes) mountHealth(h *health.API) {
	read, check := rt.on(classRead), rt.on(classHealthCheck)
	read.HandleFunc("GET /api/v1/clusters/{name}/health", h.Cluster)
	read.HandleFunc("GET /api/v1/health", h.All)
	check.HandleFunc("GET /health/clusters/{name}", h.Check)
	check.HandleFunc("HEAD /health/clusters/{name}", h.CheckHead)
}

// mountFailover mounts failover state (read, but only for callers who see
// every cluster: groups, events and drill reports span clusters), drills
// (a GET simulation is a read like failover state; POST is admin) and the
// operator actions (admin).
func (rt *routes) mountFailover(f *failover.API) {
	read, admin := rt.on(classRead), rt.on(classAdmin)
	allClusters := func(h http.HandlerFunc) http.Handler { return access.RequireAllClusters(h) }
	read.Handle("GET /api/v1/failover/events", allClusters(f.Events))
	read.Handle("GET /api/v1/failover/groups", allClusters(f.Groups))
	read.Handle("GET /api/v1/failover/drill", allClusters(f.SimulateDrill))
	admin.HandleFunc("POST /api/v1/failover/drill", f.Drill)
	admin.HandleFunc("POST /api/v1/failover/groups/{name}/freeze", f.Freeze)
	admin.HandleFunc("DELETE /api/v1/failover/groups/{name}/freeze", f.Unfreeze)
	admin.HandleFunc("POST /api/v1/failover/groups/{name}/override", f.Override)
	admin.HandleFunc("DELETE /api/v1/failover/groups/{name}/override", f.ClearOverride)
}

// on returns the registrar of a class (httpapi.Mux).
func (rt *routes) on(c routeClass) registrar { return registrar{rt: rt, class: c} }

// ServeHTTP serves the main listener.
func (rt *routes) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.mux.ServeHTTP(w, r) }

type registrar struct {
	rt    *routes
	class routeClass
}

func (g registrar) Handle(pattern string, h http.Handler) {
	rt := g.rt
	rt.list = append(rt.list, route{pattern: pattern, class: g.class})
	switch g.class {
	case classAdmin:
		// A browser sends the credentials it holds (client certificate,
		// basic auth) on a cross-site request too, and an empty body (an
		// empty form, a no-cors fetch) never meets the JSON type check:
		// net/http's CSRF check refuses cross-origin browser requests
		// (Sec-Fetch-Site, else Origin vs Host); other clients pass.
		h = rt.csrf.Handler(rt.auth.Admin(h))
	case classRead:
		h = rt.auth.Read(h)
	case classHealthCheck:
		if !rt.auth.PublicHealthChecks() {
			h = rt.auth.Read(h)
		} else {
			h = publicScope(h)
		}
	case classPublic, classIngest:
	default:
		panic("route " + pattern + ": unknown class " + string(g.class))
	}
	rt.mux.Handle(pattern, rt.bodyDeadline(g.class, h))
}

func (g registrar) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	g.Handle(pattern, http.HandlerFunc(f))
}

// publicScope lets a public route see every cluster.
func publicScope(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(access.WithScope(r.Context(), access.All())))
	})
}

// bodyReadTime is how long a client may take to send a body of at most
// limit bytes: base (10 s) plus the limit at 1 MiB/s.
func bodyReadTime(base time.Duration, limit int64) time.Duration {
	return base + time.Duration(limit)*time.Second/(1<<20)
}

// bodyDeadline cuts off a client that trickles a request body: the body
// must arrive within the body read time of the route's class. Once it has
// been read to the end the deadline is lifted, so a long query is not
// cancelled by it.
func (rt *routes) bodyDeadline(c routeClass, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(bodyReadTime(rt.bodyBase, rt.limits[c]))); err == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline at the end of the body.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
