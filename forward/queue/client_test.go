package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/internal/httpclient/httpclienttest"
)

func loadHTTPConfig(t *testing.T, text string) HTTPConfig {
	t.Helper()
	var c HTTPConfig
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	require.NoError(t, c.Validate())
	return c
}

// TestHTTPSenderTLSAndRotatingToken: the Loki and OTLP forwarders' sender
// trusts the CA of tls_config and reads bearer_token_file again for every
// request, so a rotated token is used without a restart.
func TestHTTPSenderTLSAndRotatingToken(t *testing.T) {
	tok := httpclienttest.NewToken(t, "first")
	var bodies []string
	srv, ca := httpclienttest.TLSServer(t, tok.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, r.Header.Get("Content-Type")+" "+string(b))
	})))
	for _, tlsKey := range []string{"tls_config", "tls"} {
		bodies = nil
		tok.Rotate(t, "first")
		c := loadHTTPConfig(t, fmt.Sprintf("{name: loki, url: %s, bearer_token_file: %s, %s: {ca_file: %s}}", srv.URL, tok.File(), tlsKey, ca))
		s, err := NewHTTPSender(c, map[string]string{"Content-Type": "application/x-protobuf"})
		require.NoError(t, err)
		require.NoError(t, s.Post(context.Background(), []byte("one")))
		tok.Rotate(t, "second")
		require.NoError(t, s.Post(context.Background(), []byte("two")))
		require.Equal(t, []string{"application/x-protobuf one", "application/x-protobuf two"}, bodies, tlsKey)
	}
	require.Equal(t, []string{"Bearer first", "Bearer second", "Bearer first", "Bearer second"}, tok.Seen())
}

func TestHTTPSenderBasicAuthAndHeaders(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("hunter2\n"), 0o600))
	var got string
	srv, ca := httpclienttest.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		got = u + ":" + p + " " + r.Header.Get("X-Scope-OrgID") + " " + r.UserAgent()
	}))
	c := loadHTTPConfig(t, fmt.Sprintf("{name: tempo, url: %s, basic_auth: {username: fg, password_file: %s}, headers: {X-Scope-OrgID: fleet}, tls_config: {ca_file: %s}}", srv.URL, pw, ca))
	s, err := NewHTTPSender(c, nil)
	require.NoError(t, err)
	require.NoError(t, s.Post(context.Background(), []byte("x")))
	require.Equal(t, "fg:hunter2 fleet fleetgate", got)
}

func TestHTTPConfigClientErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"{name: loki, url: http://l, headers: {Authorization: x}}", `[0] (loki).headers: setting header "Authorization" is not allowed`},
		{"{name: loki, url: http://l, tls: {cert_file: /c}}", "[0] (loki).tls: exactly one of key or key_file"},
		{"{name: loki, url: http://l, bearer_token_file: /t, basic_auth: {username: u}}", "[0] (loki): at most one of basic_auth, oauth2, bearer_token & bearer_token_file"},
	} {
		var c HTTPConfig
		dec := yaml.NewDecoder(bytes.NewReader([]byte(tc.text)))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(&c), tc.text)
		require.ErrorContains(t, ValidateList([]HTTPConfig{c}), tc.want, tc.text)
	}
}
