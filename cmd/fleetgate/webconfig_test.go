package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// testCA issues certificates for the web config tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for name (a DNS SAN).
func (ca *testCA) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// serveWith serves a test app on a real listener with the given flags.
func serveWith(t *testing.T, a *testApp, args ...string) string {
	f, err := parseFlags(args)
	require.NoError(t, err)
	l, err := listen(f, "127.0.0.1:0", a.routes, time.Minute, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	t.Cleanup(func() {
		_ = l.srv.Close()
		require.NoError(t, <-done, "Serve after Close")
	})
	return l.Addr().String()
}

func remoteWriteBody(t *testing.T) []byte {
	s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1}}}
	b, err := proto.Marshal(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}})
	require.NoError(t, err)
	return snappy.Encode(nil, b)
}

// TestWebConfigTLS: --web.config.file serves TLS with client certificates
// through exporter-toolkit; a cluster's certificate still proves the
// cluster for remote-write, and an admin's certificate is an admin.
func TestWebConfigTLS(t *testing.T) {
	ca := newTestCA(t)
	a := newTestApp(t, "")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	sc, sk := ca.issue(t, "fleetgate.test", true)
	write("server.crt", sc)
	write("server.key", sk)
	write("ca.crt", ca.pem)
	webCfg := write("web.yml", []byte("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"+
		"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"))

	addr := serveWith(t, a, "--web.config.file", webCfg)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	client := func(name string) *http.Client {
		tc := &tls.Config{RootCAs: pool, ServerName: "fleetgate.test"}
		if name != "" {
			c, k := ca.issue(t, name, false)
			pair, err := tls.X509KeyPair(c, k)
			require.NoError(t, err)
			tc.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	do := func(c *http.Client, method, path, ct string, body []byte) (int, string) {
		req, err := http.NewRequest(method, "https://"+addr+path, bytes.NewReader(body))
		require.NoError(t, err)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if ct == "application/x-protobuf" {
			req.Header.Set("Content-Encoding", "snappy")
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(rb)
	}
	code, msg := do(client("eu-2.clusters.test"), "POST", "/api/v1/write", "application/x-protobuf", remoteWriteBody(t))
	require.Equal(t, 204, code, "the cluster's certificate proves eu-2 through the web config: %s", msg)
	code, _ = do(client(""), "POST", "/api/v1/write", "application/x-protobuf", remoteWriteBody(t))
	require.Equal(t, 401, code)
	code, msg = do(client("ops.test"), "POST", "/api/v1/failover/groups/web/freeze", "application/json", []byte(`{"reason":"tls"}`))
	require.Equal(t, 200, code, msg)
	require.Contains(t, msg, `"actor":"oncall"`)
	code, _ = do(client("eu-2.clusters.test"), "POST", "/api/v1/failover/groups/web/freeze", "application/json", []byte(`{}`))
	require.Equal(t, 401, code, "a cluster's certificate is no admin's")
	code, _ = do(client("ops.test"), "GET", "/api/v1/query?query=up", "", nil)
	require.Equal(t, 200, code)
}

// TestWebConfigBasicAuth: basic_auth_users of the web config are checked
// by exporter-toolkit (bcrypt); auth.admins[].basic_auth_users gives them
// the admin role; a user without a role reads nothing (anonymous read off).
func TestWebConfigBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	dir := t.TempDir()
	webCfg := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(webCfg, []byte("basic_auth_users:\n  alice: "+string(hash)+"\n  bob: "+string(hash)+"\n"), 0o600))
	a := newTestApp(t, "", "--web.config.file", webCfg)
	addr := serveWith(t, a, "--web.config.file", webCfg)
	do := func(user, pass, method, path string, body []byte) int {
		req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
		require.NoError(t, err)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%s %s as %q: %d %s", method, path, user, resp.StatusCode, rb)
		return resp.StatusCode
	}
	require.Equal(t, 401, do("", "", "GET", "/-/healthy", nil), "exporter-toolkit asks every request for basic auth")
	require.Equal(t, 401, do("alice", "wrong", "GET", "/-/healthy", nil))
	require.Equal(t, 200, do("alice", "s3cret", "GET", "/-/healthy", nil))
	require.Equal(t, 200, do("alice", "s3cret", "POST", "/api/v1/failover/groups/web/freeze", []byte(`{"reason":"basic"}`)))
	require.Equal(t, 403, do("bob", "s3cret", "POST", "/api/v1/failover/groups/web/freeze", []byte(`{}`)), "bob has no role")
	require.Equal(t, 403, do("bob", "s3cret", "GET", "/api/v1/query?query=up", nil), "and reads nothing without anonymous read")
}

// TestWebConfigFlagConflicts: the web config and the legacy TLS flags do
// not mix; a bad web config is refused at start.
func TestWebConfigFlagConflicts(t *testing.T) {
	dir := t.TempDir()
	webCfg := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(webCfg, []byte("tls_server_config: {}\n"), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--web.config.file", webCfg, "--web.tls-cert-file", "x"}, "cannot be combined"},
		{[]string{"--web.client-ca-file", "ca.pem"}, "--web.client-ca-file needs"},
		{[]string{"--web.config.file", filepath.Join(dir, "missing.yml")}, "--web.config.file"},
	} {
		f, err := parseFlags(tc.args)
		require.NoError(t, err)
		require.ErrorContains(t, checkWebFlags(f), tc.want)
	}
	bad := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte("basic_auth_users: {alice: not-a-bcrypt-hash}\n"), 0o600))
	f, err := parseFlags([]string{"--web.config.file", bad})
	require.NoError(t, err)
	require.ErrorContains(t, checkWebFlags(f), "--web.config.file")
}
