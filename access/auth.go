package access

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/internal/httpapi"
)

// Role is what a principal may do.
type Role string

const (
	// RoleAnonymous is a caller without a credential that grants a role.
	RoleAnonymous Role = "anonymous"
	// RoleReader reads the clusters of its scope.
	RoleReader Role = "reader"
	// RoleAdmin changes state and reads every cluster.
	RoleAdmin Role = "admin"
)

// anonymousName is the name of a caller that presented no credential.
const anonymousName = "anonymous"

// Principal is an authenticated caller.
type Principal struct {
	Name  string
	Role  Role
	Scope Scope
}

type principalKey struct{}

// withPrincipal returns ctx carrying p.
func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal carried by ctx.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Actor is the name of the principal of r (an admin request's actor in
// event logs), "" when there is none.
func Actor(r *http.Request) string {
	p, _ := PrincipalFrom(r.Context())
	return p.Name
}

// Options tune an Authenticator.
type Options struct {
	// DevMode is true when no clusters are configured: anonymous read is
	// then on unless auth.anonymous_read says otherwise.
	DevMode bool
	// BasicAuthVerified reports whether the listener's web config currently
	// verifies basic auth (exporter-toolkit with basic_auth_users). Only
	// then is the user of a Basic Authorization header believed. nil: never.
	BasicAuthVerified func() bool
	// ClusterToken reports the cluster a bearer token proves ("" for none);
	// a principal token equal to a cluster's is a config error.
	ClusterToken func(token string) string
	Logger       *slog.Logger
}

type tokenEntry struct {
	sum [32]byte
	p   *Principal
}

// Authenticator maps credentials to principals and guards routes.
type Authenticator struct {
	anonymousRead      bool
	publicHealthChecks bool
	tokens             []tokenEntry
	tlsNames           map[string]*Principal
	users              map[string]*Principal
	basicVerified      func() bool
	logger             *slog.Logger
}

// New builds the authenticator from a validated Config, reading the tokens.
func New(cfg Config, o Options) (*Authenticator, error) {
	a := &Authenticator{
		anonymousRead: o.DevMode, publicHealthChecks: cfg.PublicHealthChecks,
		tlsNames: map[string]*Principal{}, users: map[string]*Principal{},
		basicVerified: o.BasicAuthVerified, logger: o.Logger,
	}
	if cfg.AnonymousRead != nil {
		a.anonymousRead = *cfg.AnonymousRead
	}
	if a.basicVerified == nil {
		a.basicVerified = func() bool { return false }
	}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	add := func(kind string, i int, pc PrincipalConfig, p *Principal) error {
		field := fmt.Sprintf("auth.%s[%d] (%s)", kind, i, pc.Name)
		tok, err := pc.loadToken()
		if err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		if tok != "" {
			if o.ClusterToken != nil {
				if cl := o.ClusterToken(tok); cl != "" {
					return fmt.Errorf("%s: bearer token is cluster %q's ingest token; give readers and admins their own tokens", field, cl)
				}
			}
			sum := sha256.Sum256([]byte(tok))
			for _, t := range a.tokens {
				if t.sum == sum {
					return fmt.Errorf("%s: same bearer token as %s %q", field, t.p.Role, t.p.Name)
				}
			}
			a.tokens = append(a.tokens, tokenEntry{sum: sum, p: p})
		}
		for _, n := range pc.TLSNames {
			a.tlsNames[n] = p
		}
		for _, u := range pc.BasicAuthUsers {
			a.users[u] = p
		}
		return nil
	}
	for i, pc := range cfg.Admins {
		if err := add("admins", i, pc, &Principal{Name: pc.Name, Role: RoleAdmin, Scope: All()}); err != nil {
			return nil, err
		}
	}
	for i, pc := range cfg.Readers {
		if err := add("readers", i, pc, &Principal{Name: pc.Name, Role: RoleReader, Scope: Clusters(pc.Clusters...)}); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// AnonymousRead reports whether callers without a credential may read.
func (a *Authenticator) AnonymousRead() bool { return a.anonymousRead }

// PublicHealthChecks reports whether /health/clusters/{name} is public.
func (a *Authenticator) PublicHealthChecks() bool { return a.publicHealthChecks }

// errWrongCredential is a credential that proves no reader or admin.
var errWrongCredential = errors.New("wrong credential")

// identify returns the principal of r: an admin or reader, or an anonymous
// principal (Name "anonymous" when r presented nothing, else the name of a
// verified basic-auth user without a role). A credential that proves no
// one is an error.
func (a *Authenticator) identify(r *http.Request) (Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			tok := strings.TrimSpace(cred)
			if tok == "" {
				return Principal{}, fmt.Errorf("%w: empty bearer token", errWrongCredential)
			}
			sum := sha256.Sum256([]byte(tok))
			var found *Principal
			for _, t := range a.tokens {
				if subtle.ConstantTimeCompare(t.sum[:], sum[:]) == 1 {
					found = t.p
				}
			}
			if found == nil {
				return Principal{}, fmt.Errorf("%w: the bearer token is not a reader's or an admin's (cluster ingest tokens do not grant read or admin)", errWrongCredential)
			}
			return *found, nil
		case strings.EqualFold(scheme, "Basic"):
			user, _, ok := r.BasicAuth()
			if !ok || !a.basicVerified() {
				return Principal{}, fmt.Errorf("%w: basic auth is only accepted with basic_auth_users in --web.config.file", errWrongCredential)
			}
			if p, ok := a.users[user]; ok {
				return *p, nil
			}
			return Principal{Name: user, Role: RoleAnonymous, Scope: All()}, nil
		default:
			return Principal{}, fmt.Errorf("%w: unsupported Authorization scheme %q (want Bearer)", errWrongCredential, scheme)
		}
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		for _, n := range cert.DNSNames {
			if p, ok := a.tlsNames[n]; ok {
				return *p, nil
			}
		}
		if p, ok := a.tlsNames[cert.Subject.CommonName]; ok {
			return *p, nil
		}
	}
	return Principal{Name: anonymousName, Role: RoleAnonymous, Scope: All()}, nil
}

// Admin guards a route that changes state: no credential is a 401 with
// WWW-Authenticate: Bearer, a wrong one a 401, a reader's a 403. The
// handler sees the admin principal and every cluster in its context.
func (a *Authenticator) Admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.identify(r)
		switch {
		case err != nil:
			unauthorized(w, err.Error())
			return
		case p.Role == RoleAnonymous && p.Name == anonymousName:
			unauthorized(w, "this endpoint needs an admin credential (Authorization: Bearer <token> or an admin client certificate)")
			return
		case p.Role != RoleAdmin:
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s %q may not change state: this endpoint needs an admin", p.Role, p.Name))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			a.logger.Info("admin request", "principal", p.Name, "method", r.Method, "path", r.URL.Path)
		}
		h.ServeHTTP(w, r.WithContext(withPrincipal(WithScope(r.Context(), All()), p)))
	})
}

// Read guards a read route: admins see every cluster, readers their scope,
// and a caller without a credential every cluster when anonymous read is
// on (else 401). A wrong credential is always a 401.
func (a *Authenticator) Read(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.identify(r)
		switch {
		case err != nil:
			unauthorized(w, err.Error())
			return
		case p.Role == RoleAnonymous && !a.anonymousRead:
			if p.Name == anonymousName {
				unauthorized(w, "this endpoint needs a reader or admin credential (auth.anonymous_read is off)")
				return
			}
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("user %q has no role in auth: (auth.anonymous_read is off)", p.Name))
			return
		}
		h.ServeHTTP(w, r.WithContext(withPrincipal(WithScope(r.Context(), p.Scope), p)))
	})
}

// RequireAllClusters guards a read route whose answer spans every cluster
// (TSDB cardinality, failover state, self-metrics): a reader scoped to some
// clusters gets a 403. It must run behind Read or Admin.
func RequireAllClusters(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := ScopeFrom(r.Context())
		if !ok || !s.IsAll() {
			writeError(w, http.StatusForbidden, "forbidden", "this endpoint shows every cluster: it needs an admin or a reader with clusters: [\"*\"]")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="fleetgate"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", msg)
}

// writeError writes Prometheus's JSON error shape.
func writeError(w http.ResponseWriter, status int, errType, msg string) {
	httpapi.WriteError(w, status, errType, msg)
}

// ClusterTokenOf adapts a cluster registry to Options.ClusterToken.
func ClusterTokenOf(reg *fleet.Registry) func(string) string {
	return func(tok string) string {
		if reg.DevMode() {
			return ""
		}
		c, err := reg.Identify(fleet.Credential{BearerToken: tok})
		if err != nil || c == nil {
			return ""
		}
		return c.Name
	}
}
