package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigValidateNamesTheField(t *testing.T) {
	tok := Credentials{BearerTokenEnv: "X"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Clusters: []ClusterConfig{{Credentials: tok}}}, "clusters[0].name: must be set"},
		{"bad name", Config{Clusters: []ClusterConfig{{Name: "eu 1", Credentials: tok}}}, "clusters[0].name: \"eu 1\" must be"},
		{"duplicate", Config{Clusters: []ClusterConfig{{Name: "a", Credentials: tok}, {Name: "a", Credentials: tok}}}, "duplicate cluster name"},
		{"role", Config{Clusters: []ClusterConfig{{Name: "a", Role: "boss", Credentials: tok}}}, "clusters[0].role: \"boss\" is not one of primary, standby (cluster a)"},
		{"no credentials", Config{Clusters: []ClusterConfig{{Name: "a"}}}, "clusters[0].credentials: a cluster needs"},
		{"two token sources", Config{Clusters: []ClusterConfig{{Name: "a", Credentials: Credentials{BearerTokenEnv: "X", BearerTokenFile: "/f"}}}}, "set only one"},
		{"cluster label", Config{Clusters: []ClusterConfig{{Name: "a", Labels: map[string]string{"cluster": "b"}, Credentials: tok}}}, `"cluster" is set from the cluster name`},
		{"bad label", Config{Clusters: []ClusterConfig{{Name: "a", Labels: map[string]string{"1x": "b"}, Credentials: tok}}}, "not a valid label name"},
		// Of several bad labels, always the first by name (not map order).
		{"bad labels", Config{Clusters: []ClusterConfig{{Name: "a", Labels: map[string]string{"z-": "b", "1x": "b", "y-": "c", "__x": "d"}, Credentials: tok}}}, `clusters[0].labels: "1x" is not a valid label name (cluster a)`},
		{"policy", Config{OnConflict: "ignore"}, "on_conflict: \"ignore\""},
		{"shared tls name", Config{Clusters: []ClusterConfig{{Name: "a", Credentials: Credentials{TLSNames: []string{"x"}}}, {Name: "b", Credentials: Credentials{TLSNames: []string{"x"}}}}}, `"x" already proves cluster "a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestIdentify(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "a.token")
	require.NoError(t, os.WriteFile(f, []byte("  secret-a \n"), 0o600))
	t.Setenv("FLEET_B", "secret-b")
	r, err := NewRegistry(Config{Clusters: []ClusterConfig{
		{Name: "a", Region: "eu", Zone: "eu-1a", Labels: map[string]string{"env": "prod"}, Credentials: Credentials{BearerTokenFile: f}},
		{Name: "b", Role: RoleStandby, Credentials: Credentials{BearerTokenEnv: "FLEET_B", TLSNames: []string{"b.example.com"}}},
	}})
	require.NoError(t, err)
	require.False(t, r.DevMode())

	c, err := r.Identify(Credential{BearerToken: "secret-a"})
	require.NoError(t, err)
	require.Equal(t, "a", c.Name)
	require.Equal(t, [][2]string{{"cluster", "a"}, {"env", "prod"}, {"region", "eu"}, {"zone", "eu-1a"}}, c.StampLabels())

	c, err = r.Identify(Credential{PeerCert: &x509.Certificate{DNSNames: []string{"b.example.com"}}})
	require.NoError(t, err)
	require.Equal(t, "b", c.Name)
	c, err = r.Identify(Credential{PeerCert: &x509.Certificate{Subject: pkix.Name{CommonName: "b.example.com"}}})
	require.NoError(t, err)
	require.Equal(t, "b", c.Name)

	for _, bad := range []Credential{{}, {BearerToken: "secret-c"}, {Claimed: "a"}, {PeerCert: &x509.Certificate{Subject: pkix.Name{CommonName: "evil"}}}} {
		_, err := r.Identify(bad)
		require.ErrorIs(t, err, ErrUnauthenticated)
	}

	req := httptest.NewRequest("POST", "/", nil)
	req.Header.Set("Authorization", "Bearer secret-b")
	c, err = r.Identify(CredentialFromHTTP(req))
	require.NoError(t, err)
	require.Equal(t, "b", c.Name)
	require.Len(t, r.Statuses(), 2, "silent clusters are listed")
}

func TestMissingSecretIsAnError(t *testing.T) {
	_, err := NewRegistry(Config{Clusters: []ClusterConfig{{Name: "a", Credentials: Credentials{BearerTokenEnv: "FLEET_UNSET_VAR"}}}})
	require.ErrorContains(t, err, "clusters[0].credentials.bearer_token_env: environment variable FLEET_UNSET_VAR is empty or unset (cluster a)")
	t.Setenv("T1", "same")
	t.Setenv("T2", "same")
	_, err = NewRegistry(Config{Clusters: []ClusterConfig{{Name: "a", Credentials: Credentials{BearerTokenEnv: "T1"}}, {Name: "b", Credentials: Credentials{BearerTokenEnv: "T2"}}}})
	require.ErrorContains(t, err, `same bearer token as cluster "a"`)
}

func TestDevMode(t *testing.T) {
	r, err := NewRegistry(Config{})
	require.NoError(t, err)
	require.True(t, r.DevMode())
	c, err := r.Identify(Credential{Claimed: "lab"})
	require.NoError(t, err)
	require.Equal(t, "lab", c.Name)
	require.False(t, c.Verified)
	c, err = r.Identify(Credential{})
	require.NoError(t, err)
	require.Nil(t, c, "identity then comes from the data")
	_, err = r.Identify(Credential{Claimed: "bad name!"})
	require.ErrorIs(t, err, ErrUnauthenticated)
}

// TestCredentialFromHTTPNeedsAVerifiedCertificate: a client certificate
// the listener did not verify (web config client_auth_type
// RequestClientCert or RequireAnyClientCert) proves nothing.
func TestCredentialFromHTTPNeedsAVerifiedCertificate(t *testing.T) {
	cert := &x509.Certificate{DNSNames: []string{"b.example.com"}}
	req := httptest.NewRequest("POST", "/", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	require.Nil(t, CredentialFromHTTP(req).PeerCert)
	req.TLS.VerifiedChains = [][]*x509.Certificate{{cert}}
	require.Same(t, cert, CredentialFromHTTP(req).PeerCert)
}
