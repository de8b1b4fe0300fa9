package httpclient

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/internal/httpclient/httpclienttest"
)

// dest is a destination the way the packages embed the block.
type dest struct {
	URL    string `yaml:"url"`
	Client Config `yaml:",inline"`
}

func (d *dest) UnmarshalYAML(unmarshal func(any) error) error {
	type plain dest
	*d = dest{Client: DefaultConfig()}
	return d.Client.Decoded(unmarshal((*plain)(d)))
}

func load(t *testing.T, text string) (dest, error) {
	t.Helper()
	var d dest
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true) // as cmd/fleetgate loads the file
	err := dec.Decode(&d)
	return d, err
}

func TestYAMLKeys(t *testing.T) {
	d, err := load(t, `
url: https://x
authorization: {credentials_file: /t}
tls_config: {ca_file: /ca, server_name: x.example}
proxy_url: http://proxy:3128
http_headers: {X-Scope-OrgID: {values: [fleet]}}
`)
	require.NoError(t, err)
	hc, err := d.Client.ClientConfig()
	require.NoError(t, err)
	require.True(t, hc.FollowRedirects, "prometheus/common's defaults when the key is left out")
	require.True(t, hc.EnableHTTP2)
	require.Equal(t, "Bearer", hc.Authorization.Type)
	require.Equal(t, "/t", hc.Authorization.CredentialsFile)
	require.Equal(t, "/ca", hc.TLSConfig.CAFile)
	require.Equal(t, "proxy:3128", hc.ProxyURL.Host)
	require.Equal(t, []string{"fleet"}, hc.HTTPHeaders.Headers["X-Scope-OrgID"].Values)

	// The older keys map onto the same fields.
	t.Setenv("FG_TEST_TOKEN", " s3cret\n")
	d, err = load(t, `
url: https://x
headers: {X-Scope-OrgID: fleet}
bearer_token_env: FG_TEST_TOKEN
tls: {ca_file: /ca, insecure_skip_verify: true}
follow_redirects: false
`)
	require.NoError(t, err)
	hc, err = d.Client.ClientConfig()
	require.NoError(t, err)
	require.False(t, hc.FollowRedirects)
	require.Equal(t, config.Secret("s3cret"), hc.Authorization.Credentials)
	require.Equal(t, config.TLSConfig{CAFile: "/ca", InsecureSkipVerify: true}, hc.TLSConfig)
	require.Equal(t, []string{"fleet"}, hc.HTTPHeaders.Headers["X-Scope-OrgID"].Values)

	d, err = load(t, "url: https://x\nbearer_token_file: /t\n")
	require.NoError(t, err)
	hc, err = d.Client.ClientConfig()
	require.NoError(t, err)
	require.Equal(t, &config.Authorization{Type: "Bearer", CredentialsFile: "/t"}, hc.Authorization)
	require.Equal(t, "/t", d.Client.HTTPClientConfig.BearerTokenFile, "the loaded config is not rewritten")

	_, err = load(t, "url: https://x\ntls_config: {ca_fil: /ca}\n")
	require.ErrorContains(t, err, "field ca_fil not found", "unknown keys inside the block are refused")
	_, err = load(t, "url: https://x\nbearer_tokn_file: /t\n")
	require.ErrorContains(t, err, "field bearer_tokn_file not found")
}

func TestValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"tls_config: {cert_file: /c}", "d.tls_config: exactly one of key or key_file"},
		{"tls: {key_file: /k}", "d.tls: exactly one of cert or cert_file"},
		{"tls: {ca_file: /a}\ntls_config: {ca_file: /b}", "d.tls: set tls or tls_config, not both"},
		{"basic_auth: {username: u, password: p, password_file: /p}", "d.basic_auth: at most one of basic_auth password"},
		{"basic_auth: {username: u, password: p}", "d.basic_auth.password: secrets do not go in the config text; use password_file"},
		{"authorization: {credentials: x}", "d.authorization.credentials: secrets do not go in the config text; use credentials_file"},
		{"bearer_token: x", "d.bearer_token: secrets do not go in the config text; use bearer_token_file or bearer_token_env"},
		{"oauth2: {client_id: x, client_secret: s, token_url: http://t}", "d.oauth2.client_secret: secrets do not go in the config text"},
		{"tls_config: {cert_file: /c, key: k}", "d.tls_config.key: secrets do not go in the config text; use key_file"},
		{"http_headers: {X-Key: {secrets: [s]}}", "d.http_headers.X-Key.secrets: secrets do not go in the config text; use files"},
		{"proxy_url: http://p\nproxy_connect_header: {Proxy-Authorization: [x]}", "d.proxy_connect_header: is not supported"},
		{"oauth2: {client_id: x}", "d.oauth2: oauth2 token_url must be configured"},
		{"proxy_url: \"http://a b\"", "d: parse \"http://a b\": invalid character"},
		{"authorization: {type: Basic, credentials_file: /x}", "d.authorization: authorization type cannot be set to \"basic\""},
		{"authorization: {credentials_file: /x}\nbasic_auth: {username: u}", "d: at most one of basic_auth, oauth2 & authorization must be configured"},
		{"bearer_token_file: /t\nbearer_token_env: T", "d.bearer_token_env: set only one of"},
		{"no_proxy: localhost", "d.proxy_url: if no_proxy is configured, proxy_url must also be configured"},
		{"http_headers: {Authorization: {values: [x]}}", "d.http_headers: setting header \"Authorization\" is not allowed"},
		{"headers: {authorization: x}", "d.headers: setting header \"Authorization\" is not allowed"},
		{"headers: {X-A: x}\nhttp_headers: {x-a: {values: [y]}}", "d.headers: X-A is also set in http_headers"},
	} {
		d, err := load(t, "url: https://x\n"+tc.text)
		require.NoError(t, err, tc.text)
		require.ErrorContains(t, Under("d", d.Client.Validate()), tc.want, tc.text)
	}
	d, err := load(t, "url: https://x\nbearer_token_env: FG_TEST_UNSET\n")
	require.NoError(t, err)
	require.NoError(t, Under("d", d.Client.Validate()), "the environment is read when the client is built, not by check config")
	_, err = d.Client.NewClient("t", 0)
	require.EqualError(t, At("d", err), "d.bearer_token_env: environment variable FG_TEST_UNSET is empty or unset")
}

func get(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestClientTLSAndTokenFile: TLS against a private CA, and a token file
// that changes between two requests is read again.
func TestClientTLSAndTokenFile(t *testing.T) {
	tok := httpclienttest.NewToken(t, "first")
	var ua string
	srv, ca := httpclienttest.TLSServer(t, tok.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ua = r.UserAgent() })))
	d, err := load(t, "url: x\nbearer_token_file: "+tok.File()+"\ntls_config: {ca_file: "+ca+"}\n")
	require.NoError(t, err)
	c, err := d.Client.NewClient("test", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, get(t, c, srv.URL))
	tok.Rotate(t, "second")
	require.Equal(t, http.StatusOK, get(t, c, srv.URL))
	require.Equal(t, []string{"Bearer first", "Bearer second"}, tok.Seen())
	require.Equal(t, UserAgent, ua)

	// Without the CA the server is not trusted.
	d.Client.HTTPClientConfig.TLSConfig = config.TLSConfig{}
	c, err = d.Client.NewClient("test", 5*time.Second)
	require.NoError(t, err)
	_, err = c.Get(srv.URL)
	require.ErrorContains(t, err, "certificate")
}

func TestClientBasicAuthAndHeaders(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("hunter2\n"), 0o600))
	var gotUser, gotPass, org, extra string
	srv, ca := httpclienttest.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUser, gotPass, _ = r.BasicAuth()
		org, extra = r.Header.Get("X-Scope-OrgID"), r.Header.Get("X-Extra")
	}))
	d, err := load(t, "url: x\nbasic_auth: {username: fg, password_file: "+pw+"}\nheaders: {X-Scope-OrgID: fleet}\nhttp_headers: {X-Extra: {values: [e]}}\ntls: {ca_file: "+ca+"}\n")
	require.NoError(t, err)
	c, err := d.Client.NewClient("test", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, get(t, c, srv.URL))
	require.Equal(t, []string{"fg", "hunter2", "fleet", "e"}, []string{gotUser, gotPass, org, extra})
}
