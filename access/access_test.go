package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
)

func writeToken(t *testing.T, dir, name, tok string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(tok+"\n"), 0o600))
	return p
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	clusters := []fleet.ClusterConfig{
		{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenEnv: "X", TLSNames: []string{"eu-1.example.com"}}},
		{Name: "us-1", Credentials: fleet.Credentials{BearerTokenEnv: "Y"}},
	}
	tok := PrincipalConfig{Name: "a", BearerTokenEnv: "A"}
	validate := func(c Config, clusters []fleet.ClusterConfig) error {
		if err := c.Validate(); err != nil {
			return err
		}
		return c.CheckClusters(clusters)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"reader without clusters", Config{Readers: []PrincipalConfig{tok}}, "readers[0].clusters: must be set"},
		{"no name", Config{Admins: []PrincipalConfig{{BearerTokenEnv: "A"}}}, "admins[0].name: must be set"},
		{"no credential", Config{Admins: []PrincipalConfig{{Name: "a"}}}, "admins[0]: needs bearer_token_file"},
		{"file and env", Config{Admins: []PrincipalConfig{{Name: "a", BearerTokenEnv: "A", BearerTokenFile: "/f"}}}, "admins[0]: set only one"},
		{"duplicate name", Config{Admins: []PrincipalConfig{tok}, Readers: []PrincipalConfig{{Name: "a", BearerTokenEnv: "B", Clusters: []string{"eu-1"}}}}, `readers[0].name: "a" is already used by admins[0]`},
		{"unknown cluster", Config{Readers: []PrincipalConfig{{Name: "r", BearerTokenEnv: "B", Clusters: []string{"eu-9"}}}}, `readers[0].clusters[0]: unknown cluster "eu-9"`},
		{"star not alone", Config{Readers: []PrincipalConfig{{Name: "r", BearerTokenEnv: "B", Clusters: []string{"eu-1", "*"}}}}, "readers[0].clusters[1]"},
		{"admin with clusters", Config{Admins: []PrincipalConfig{{Name: "a", BearerTokenEnv: "A", Clusters: []string{"eu-1"}}}}, "admins[0].clusters: admins see every cluster"},
		{"cluster tls name", Config{Admins: []PrincipalConfig{{Name: "a", TLSNames: []string{"eu-1.example.com"}}}}, `admins[0].tls_names[0]: "eu-1.example.com" already proves cluster "eu-1"`},
		{"duplicate user", Config{Admins: []PrincipalConfig{{Name: "a", BasicAuthUsers: []string{"u"}}, {Name: "b", BasicAuthUsers: []string{"u"}}}}, "admins[1].basic_auth_users[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.cfg, clusters)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	ok := Config{Admins: []PrincipalConfig{tok}, Readers: []PrincipalConfig{{Name: "r", BearerTokenEnv: "B", Clusters: []string{"*"}}}}
	require.NoError(t, validate(ok, clusters))
	// Dev mode: any cluster name may be scoped.
	dev := Config{Readers: []PrincipalConfig{{Name: "r", BearerTokenEnv: "B", Clusters: []string{"later"}}}}
	require.NoError(t, validate(dev, nil))
}

func TestNewRejectsSharedTokens(t *testing.T) {
	dir := t.TempDir()
	clusterTok := writeToken(t, dir, "eu-1", "cluster-secret")
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: []fleet.ClusterConfig{{Name: "eu-1", Credentials: fleet.Credentials{BearerTokenFile: clusterTok}}}})
	require.NoError(t, err)
	o := Options{ClusterToken: ClusterTokenOf(reg)}

	_, err = New(Config{Admins: []PrincipalConfig{{Name: "oncall", BearerTokenFile: clusterTok}}}, o)
	require.ErrorContains(t, err, `auth.admins[0] (oncall): bearer token is cluster "eu-1"'s ingest token`)

	same := writeToken(t, dir, "same", "s")
	_, err = New(Config{Admins: []PrincipalConfig{{Name: "a", BearerTokenFile: same}}, Readers: []PrincipalConfig{{Name: "r", BearerTokenFile: same, Clusters: []string{"eu-1"}}}}, o)
	require.ErrorContains(t, err, `auth.readers[0] (r): same bearer token as admin "a"`)

	_, err = New(Config{Admins: []PrincipalConfig{{Name: "a", BearerTokenFile: filepath.Join(dir, "missing")}}}, o)
	require.ErrorContains(t, err, "auth.admins[0] (a).bearer_token_file")

	t.Setenv("FG_EMPTY", "")
	_, err = New(Config{Admins: []PrincipalConfig{{Name: "a", BearerTokenEnv: "FG_EMPTY"}}}, o)
	require.ErrorContains(t, err, "environment variable FG_EMPTY is empty")
}

// newTestAuth has an admin, a reader scoped to eu-1 and one of every cluster.
func newTestAuth(t *testing.T, anonymous *bool, basic bool) *Authenticator {
	t.Helper()
	dir := t.TempDir()
	a, err := New(Config{
		AnonymousRead: anonymous,
		Admins:        []PrincipalConfig{{Name: "oncall", BearerTokenFile: writeToken(t, dir, "admin", "admin-token"), TLSNames: []string{"ops.example.com"}, BasicAuthUsers: []string{"alice"}}},
		Readers: []PrincipalConfig{
			{Name: "eu-team", BearerTokenFile: writeToken(t, dir, "eu", "eu-token"), Clusters: []string{"eu-1"}},
			{Name: "all", BearerTokenFile: writeToken(t, dir, "all", "all-token"), Clusters: []string{"*"}},
		},
	}, Options{BasicAuthVerified: func() bool { return basic }})
	require.NoError(t, err)
	return a
}

func TestMiddlewares(t *testing.T) {
	no := false
	a := newTestAuth(t, &no, true)
	seen := func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		s, _ := ScopeFrom(r.Context())
		_, _ = io.WriteString(w, p.Name+" "+s.String())
	}
	admin := a.Admin(http.HandlerFunc(seen))
	read := a.Read(http.HandlerFunc(seen))
	certOf := func(cn string, verified bool) *tls.ConnectionState {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		st := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
		if verified {
			st.VerifiedChains = [][]*x509.Certificate{{c}}
		}
		return st
	}
	for _, tc := range []struct {
		name      string
		h         http.Handler
		auth      string
		tls       *tls.ConnectionState
		code      int
		body      string
		challenge bool
	}{
		{"admin route, no credential", admin, "", nil, 401, "needs an admin credential", true},
		{"admin route, wrong token", admin, "Bearer nope", nil, 401, "not a reader's or an admin's", true},
		{"admin route, reader", admin, "Bearer eu-token", nil, 403, `reader \"eu-team\" may not change state`, false},
		{"admin route, admin", admin, "Bearer admin-token", nil, 200, "oncall *", false},
		{"admin route, lower-case scheme", admin, "bearer admin-token", nil, 200, "oncall *", false},
		{"admin route, admin cert", admin, "", certOf("ops.example.com", true), 200, "oncall *", false},
		{"admin route, unverified admin cert", admin, "", certOf("ops.example.com", false), 401, "needs an admin credential", true},
		{"admin route, basic admin user", admin, "Basic YWxpY2U6eA==", nil, 200, "oncall *", false},
		{"admin route, basic user without role", admin, "Basic Ym9iOng=", nil, 403, `anonymous \"bob\"`, false},
		{"admin route, other scheme", admin, "Digest x", nil, 401, "unsupported Authorization scheme", true},
		{"read route, no credential", read, "", nil, 401, "anonymous_read is off", true},
		{"read route, wrong token", read, "Bearer nope", nil, 401, "cluster ingest tokens do not grant", true},
		{"read route, empty token", read, "Bearer ", nil, 401, "empty bearer token", true},
		{"read route, reader", read, "Bearer eu-token", nil, 200, "eu-team eu-1", false},
		{"read route, reader of all", read, "Bearer all-token", nil, 200, "all *", false},
		{"read route, admin", read, "Bearer admin-token", nil, 200, "oncall *", false},
		{"read route, basic user without role", read, "Basic Ym9iOng=", nil, 403, "has no role", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/x", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			r.TLS = tc.tls
			w := httptest.NewRecorder()
			tc.h.ServeHTTP(w, r)
			require.Equal(t, tc.code, w.Code, w.Body.String())
			require.Contains(t, w.Body.String(), tc.body)
			if tc.code != 200 {
				require.JSONEq(t, w.Body.String(), w.Body.String()) // valid JSON
				require.Contains(t, w.Body.String(), `"status":"error"`)
			}
			require.Equal(t, tc.challenge, w.Header().Get("WWW-Authenticate") != "")
		})
	}

	// Basic auth is not believed unless the web config verifies it.
	unverified := newTestAuth(t, &no, false)
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Set("Authorization", "Basic YWxpY2U6eA==")
	w := httptest.NewRecorder()
	unverified.Admin(http.HandlerFunc(seen)).ServeHTTP(w, r)
	require.Equal(t, 401, w.Code)
	require.Contains(t, w.Body.String(), "basic_auth_users in --web.config.file")

	// Anonymous read on: no credential reads everything, a wrong one is still refused.
	yes := true
	anon := newTestAuth(t, &yes, false).Read(http.HandlerFunc(seen))
	w = httptest.NewRecorder()
	anon.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
	require.Equal(t, 200, w.Code)
	require.Equal(t, "anonymous *", w.Body.String())
	r = httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Set("Authorization", "Bearer wrong")
	w = httptest.NewRecorder()
	anon.ServeHTTP(w, r)
	require.Equal(t, 401, w.Code)
}

func TestAnonymousReadDefaultsToDevMode(t *testing.T) {
	a, err := New(Config{}, Options{DevMode: true})
	require.NoError(t, err)
	require.True(t, a.AnonymousRead())
	a, err = New(Config{}, Options{DevMode: false})
	require.NoError(t, err)
	require.False(t, a.AnonymousRead())
	no := false
	a, err = New(Config{AnonymousRead: &no}, Options{DevMode: true})
	require.NoError(t, err)
	require.False(t, a.AnonymousRead())
}

func TestRequireAllClusters(t *testing.T) {
	h := RequireAllClusters(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	for _, tc := range []struct {
		ctx  context.Context
		code int
	}{
		{context.Background(), 403},
		{WithScope(context.Background(), Clusters("eu-1")), 403},
		{WithScope(context.Background(), All()), 200},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(tc.ctx))
		require.Equal(t, tc.code, w.Code)
	}
}

func TestScopeMatcher(t *testing.T) {
	require.Nil(t, All().Matcher())
	require.True(t, Clusters("a", "*").IsAll())
	m := Clusters("eu-1", "eu.2", "eu-1").Matcher()
	require.Equal(t, `cluster=~"eu-1|eu\\.2"`, m.String())
	for v, want := range map[string]bool{"eu-1": true, "eu.2": true, "euX2": false, "eu-1x": false, "xeu-1": false, "": false} {
		require.Equal(t, want, m.Matches(v), v)
	}
	none := Scope{}.Matcher()
	for _, v := range []string{"", "a", "eu-1"} {
		require.False(t, none.Matches(v), v)
	}
	require.Equal(t, "eu-1,eu.2", Clusters("eu.2", "eu-1").String())
	require.True(t, Clusters("eu-1").Allows("eu-1"))
	require.False(t, Clusters("eu-1").Allows("us-1"))
}

// TestScopedQueryable: a scoped reader sees only its clusters through
// Select, LabelNames and LabelValues of samples, chunks and exemplars; no
// scope is an error (fail closed).
func TestScopedQueryable(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, &tsdb.Options{EnableExemplarStorage: true, MaxExemplars: 100, RetentionDuration: int64(1e12)}, nil)
	require.NoError(t, err)
	defer db.Close()
	app := db.Appender(context.Background())
	for _, c := range []string{"eu-1", "us-1", "eu-2"} {
		_, err := app.Append(0, labels.FromStrings("__name__", "up", "cluster", c, "job", "j-"+c), 1000, 1)
		require.NoError(t, err)
	}
	_, err = app.Append(0, labels.FromStrings("__name__", "up", "job", "no-cluster"), 1000, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	q := NewQueryable(db)
	selectClusters := func(ctx context.Context, chunk bool, ms ...*labels.Matcher) ([]string, error) {
		var out []string
		if chunk {
			cq, err := q.ChunkQuerier(0, 2000)
			require.NoError(t, err)
			defer cq.Close()
			ss := cq.Select(ctx, true, nil, ms...)
			for ss.Next() {
				out = append(out, ss.At().Labels().Get("cluster"))
			}
			return out, ss.Err()
		}
		sq, err := q.Querier(0, 2000)
		require.NoError(t, err)
		defer sq.Close()
		ss := sq.Select(ctx, true, nil, ms...)
		for ss.Next() {
			it := ss.At().Iterator(nil)
			require.Equal(t, chunkenc.ValFloat, it.Next())
			out = append(out, ss.At().Labels().Get("cluster"))
		}
		return out, ss.Err()
	}
	all := labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")
	eu1 := WithScope(context.Background(), Clusters("eu-1"))
	for _, chunk := range []bool{false, true} {
		got, err := selectClusters(eu1, chunk, all)
		require.NoError(t, err)
		require.Equal(t, []string{"eu-1"}, got)
		got, err = selectClusters(eu1, chunk, labels.MustNewMatcher(labels.MatchEqual, "cluster", "us-1"))
		require.NoError(t, err)
		require.Empty(t, got)
		got, err = selectClusters(WithScope(context.Background(), All()), chunk, all)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"", "eu-1", "eu-2", "us-1"}, got)
		got, err = selectClusters(WithScope(context.Background(), Scope{}), chunk, all)
		require.NoError(t, err)
		require.Empty(t, got)
		_, err = selectClusters(context.Background(), chunk, all)
		require.ErrorIs(t, err, ErrNoScope)
	}

	sq, err := q.Querier(0, 2000)
	require.NoError(t, err)
	defer sq.Close()
	vals, _, err := sq.LabelValues(eu1, "job", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"j-eu-1"}, vals)
	vals, _, err = sq.LabelValues(eu1, "cluster", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"eu-1"}, vals)
	_, _, err = sq.LabelValues(context.Background(), "job", nil)
	require.ErrorIs(t, err, ErrNoScope)
	_, _, err = sq.LabelNames(context.Background(), nil)
	require.ErrorIs(t, err, ErrNoScope)
	names, _, err := sq.LabelNames(eu1, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"__name__", "cluster", "job"}, names)
}

// TestScopedExemplars: exemplar selectors get the scope's matcher too.
func TestScopedExemplars(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, &tsdb.Options{EnableExemplarStorage: true, MaxExemplars: 100, RetentionDuration: int64(1e12)}, nil)
	require.NoError(t, err)
	defer db.Close()
	app := db.Appender(context.Background())
	for _, c := range []string{"eu-1", "us-1"} {
		ls := labels.FromStrings("__name__", "req_total", "cluster", c)
		ref, err := app.Append(0, ls, 1000, 1)
		require.NoError(t, err)
		_, err = app.AppendExemplar(ref, ls, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "t-"+c), Value: 1, Ts: 1000, HasTs: true})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
	eq := NewExemplarQueryable(db)
	sel := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "req_total")}
	query := func(ctx context.Context) []string {
		q, err := eq.ExemplarQuerier(ctx)
		require.NoError(t, err)
		res, err := q.Select(0, 2000, sel)
		require.NoError(t, err)
		var out []string
		for _, r := range res {
			out = append(out, r.SeriesLabels.Get("cluster"))
		}
		return out
	}
	require.ElementsMatch(t, []string{"eu-1", "us-1"}, query(WithScope(context.Background(), All())))
	require.Equal(t, []string{"eu-1"}, query(WithScope(context.Background(), Clusters("eu-1"))))
	require.Empty(t, query(WithScope(context.Background(), Scope{})))
	_, err = eq.ExemplarQuerier(context.Background())
	require.ErrorIs(t, err, ErrNoScope)
}

var _ storage.SampleAndChunkQueryable = NewQueryable(nil)
