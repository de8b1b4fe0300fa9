// Package httpclient is the block every outbound HTTP destination of
// fleetgate takes in its YAML (federation sources, forwarders, Alertmanagers,
// webhooks): prometheus/common's config.HTTPClientConfig inlined, as in
// Prometheus's remote_write and alertmanagers entries (authorization,
// basic_auth, oauth2, bearer_token_file, tls_config, proxy_url,
// http_headers, follow_redirects, enable_http2, ...), plus the three older
// keys fleetgate accepted before it (headers, bearer_token_env, tls), which
// map onto it. Clients are built by config.NewClientFromConfig only, so
// credential, password and header files are re-read on every request.
package httpclient

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// UserAgent is sent by the clients NewClient builds.
const UserAgent = "fleetgate"

// Config is the outbound HTTP block of one destination. Embed it as a named
// field with `yaml:",inline"` and start the destination's UnmarshalYAML
// from DefaultConfig(), as Prometheus does with its DefaultRemoteWriteConfig.
type Config struct {
	// HTTPClientConfig is prometheus/common's client config, keys inlined.
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
	// Headers are plain request headers (e.g. X-Scope-OrgID); an older
	// spelling of http_headers: {NAME: {values: [VALUE]}}.
	Headers map[string]string `yaml:"headers,omitempty"`
	// BearerTokenEnv names an environment variable holding a bearer token,
	// read once at start. Tokens that rotate belong in bearer_token_file or
	// authorization.credentials_file, which are read on every request.
	BearerTokenEnv string `yaml:"bearer_token_env,omitempty"`
	// TLS is the older spelling of tls_config.
	TLS *TLS `yaml:"tls,omitempty"`

	// decodeErr is what prometheus/common's own types refused while the
	// block was decoded; Validate reports it under the block's path.
	decodeErr error
}

// TLS is the older `tls:` block; each key means what it means in tls_config.
type TLS struct {
	CAFile             string `yaml:"ca_file,omitempty"`
	CertFile           string `yaml:"cert_file,omitempty"`
	KeyFile            string `yaml:"key_file,omitempty"`
	ServerName         string `yaml:"server_name,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty"`
}

// DefaultConfig is the block a destination starts from: prometheus/common's
// defaults (follow_redirects and enable_http2 on).
func DefaultConfig() Config {
	return Config{HTTPClientConfig: config.DefaultHTTPClientConfig}
}

// Decoded takes the error of a destination's decode (its UnmarshalYAML's
// unmarshal call) and returns what the YAML decoder should see. yaml's own
// errors (unknown keys, wrong types; they carry line numbers) are returned
// as they are. Errors that types raise in their own UnmarshalYAML while
// they are decoded (tls_config's "exactly one of key or key_file", oauth2's
// missing token_url, a proxy_url or a timeout that does not parse) name no
// YAML path, so they are kept in c and Validate reports them with the
// destination's path (and tls_config or oauth2 when it was one of those).
func (c *Config) Decoded(err error) error {
	var te *yaml.TypeError
	if err == nil || errors.As(err, &te) {
		return err
	}
	c.decodeErr = err
	return nil
}

// FieldError is an error in one key of the block; Field is relative to the
// block ("tls_config", "basic_auth", or "" for the block as a whole).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Err.Error()
	}
	return e.Field + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error) error { return &FieldError{Field: field, Err: err} }

// Validate checks the block. The block is inlined in its destination, so a
// *FieldError names the key relative to the destination ("tls_config: ..."),
// or none when the error is the block's as a whole; At(path, err) puts the
// destination's path in front.
func (c *Config) Validate() error {
	_, err := c.resolve(false)
	return err
}

// Under puts path in front of err, the error of a Validate() of what sits at
// path. Validate errors name the key relative to what they check: a
// *FieldError of this block (its key, or none for the block as a whole, as
// for At), or an error whose text starts with the relative key or index
// ("url: ...", "[1].name: ..."). Under("destinations[0] (mimir)", err) gives
// "destinations[0] (mimir).tls_config: ..." or "destinations[0] (mimir).url: ...";
// Under("clusters", err) gives "clusters[1].name: ...". Only err itself is
// looked at, not what it wraps: a FieldError already put under a path is
// plain text.
func Under(path string, err error) error {
	if err == nil {
		return nil
	}
	if fe, ok := err.(*FieldError); ok {
		if fe.Field == "" {
			return fmt.Errorf("%s: %w", path, fe.Err)
		}
		return fmt.Errorf("%s.%s: %w", path, fe.Field, fe.Err)
	}
	if strings.HasPrefix(err.Error(), "[") {
		return fmt.Errorf("%s%w", path, err)
	}
	return fmt.Errorf("%s.%w", path, err)
}

// At prefixes err, an error of the block or of the client built from it,
// with the path of the destination it came from (e.g. "destinations[0]
// (mimir)" gives "destinations[0] (mimir).tls_config: ...").
func At(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		return fmt.Errorf("%s.%s: %w", prefix, fe.Field, fe.Err)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// HTTPClientConfig is the prometheus/common config the block means: the
// older keys mapped onto it, bearer_token_env read, validated. It is what
// NewClient builds from and what Prometheus's own clients (remote write,
// remote read) take.
func (c *Config) ClientConfig() (config.HTTPClientConfig, error) {
	return c.resolve(true)
}

func (c *Config) resolve(readEnv bool) (config.HTTPClientConfig, error) {
	hc := c.HTTPClientConfig // the pointers inside are not written through below
	if c.decodeErr != nil {
		switch {
		case hc.TLSConfig.Validate() != nil:
			return hc, fieldErr("tls_config", c.decodeErr)
		case hc.OAuth2 != nil && hc.OAuth2.Validate() != nil:
			return hc, fieldErr("oauth2", c.decodeErr)
		}
		return hc, fieldErr("", c.decodeErr)
	}
	if c.TLS != nil {
		if hc.TLSConfig != (config.TLSConfig{}) {
			return hc, fieldErr("tls", errors.New("set tls or tls_config, not both"))
		}
		hc.TLSConfig = config.TLSConfig{CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
			ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify}
	}
	tlsKey := "tls_config"
	if c.TLS != nil {
		tlsKey = "tls"
	}
	if err := hc.TLSConfig.Validate(); err != nil {
		return hc, fieldErr(tlsKey, err)
	}
	if len(c.Headers) > 0 {
		h := &config.Headers{Headers: map[string]config.Header{}}
		if hc.HTTPHeaders != nil {
			maps.Copy(h.Headers, hc.HTTPHeaders.Headers)
		}
		for _, k := range slices.Sorted(maps.Keys(c.Headers)) {
			if strings.TrimSpace(k) == "" {
				return hc, fieldErr("headers", errors.New("empty header name"))
			}
			for n := range h.Headers {
				if http.CanonicalHeaderKey(n) == http.CanonicalHeaderKey(k) {
					return hc, fieldErr("headers", fmt.Errorf("%s is also set in http_headers", k))
				}
			}
			h.Headers[k] = config.Header{Values: []string{c.Headers[k]}}
		}
		if err := h.Validate(); err != nil {
			return hc, fieldErr("headers", err)
		}
		hc.HTTPHeaders = h
	} else if hc.HTTPHeaders != nil {
		if err := hc.HTTPHeaders.Validate(); err != nil {
			return hc, fieldErr("http_headers", err)
		}
	}
	if err := hc.ProxyConfig.Validate(); err != nil {
		return hc, fieldErr("proxy_url", err)
	}
	if c.BearerTokenEnv != "" {
		if hc.Authorization != nil || hc.BasicAuth != nil || hc.OAuth2 != nil || hc.BearerToken != "" || hc.BearerTokenFile != "" {
			return hc, fieldErr("bearer_token_env", errors.New("set only one of bearer_token_env, bearer_token_file, bearer_token, authorization, basic_auth and oauth2"))
		}
		tok := "env"
		if readEnv {
			tok = strings.TrimSpace(os.Getenv(c.BearerTokenEnv))
			if tok == "" {
				return hc, fieldErr("bearer_token_env", fmt.Errorf("environment variable %s is empty or unset", c.BearerTokenEnv))
			}
		}
		hc.Authorization = &config.Authorization{Type: "Bearer", Credentials: config.Secret(tok)}
	}
	// Each auth block alone first, so an error inside one names its key.
	if a := hc.Authorization; a != nil && c.BearerTokenEnv == "" {
		one := config.HTTPClientConfig{Authorization: &config.Authorization{Type: a.Type, Credentials: a.Credentials, CredentialsFile: a.CredentialsFile, CredentialsRef: a.CredentialsRef}}
		if err := one.Validate(); err != nil {
			return hc, fieldErr("authorization", err)
		}
	}
	if b := hc.BasicAuth; b != nil {
		bc := *b
		if err := (&config.HTTPClientConfig{BasicAuth: &bc}).Validate(); err != nil {
			return hc, fieldErr("basic_auth", err)
		}
	}
	if o := hc.OAuth2; o != nil {
		oc := *o
		if err := (&config.HTTPClientConfig{OAuth2: &oc}).Validate(); err != nil {
			return hc, fieldErr("oauth2", err)
		}
		if err := oc.TLSConfig.Validate(); err != nil {
			return hc, fieldErr("oauth2.tls_config", err)
		}
	}
	if err := noInlineSecrets(&c.HTTPClientConfig); err != nil {
		return hc, err
	}
	if hc.Authorization != nil {
		a := *hc.Authorization // Validate sets the default type; do not write into the caller's config
		hc.Authorization = &a
	}
	// Then the block as a whole: conflicts between auth keys (the message
	// names them), bearer_token_file mapped onto authorization.
	if err := hc.Validate(); err != nil {
		return hc, fieldErr("", err)
	}
	return hc, nil
}

// noInlineSecrets keeps fleetgate's rule that secrets never live in the
// config text: each of prometheus/common's inline secret keys has a file
// key beside it, and bearer_token_env reads the environment.
func noInlineSecrets(hc *config.HTTPClientConfig) error {
	inline := func(key, instead string) error {
		return fieldErr(key, fmt.Errorf("secrets do not go in the config text; use %s", instead))
	}
	switch {
	case hc.BearerToken != "":
		return inline("bearer_token", "bearer_token_file or bearer_token_env")
	case hc.Authorization != nil && hc.Authorization.Credentials != "":
		return inline("authorization.credentials", "credentials_file")
	case hc.BasicAuth != nil && hc.BasicAuth.Password != "":
		return inline("basic_auth.password", "password_file")
	case hc.OAuth2 != nil && hc.OAuth2.ClientSecret != "":
		return inline("oauth2.client_secret", "client_secret_file")
	case hc.OAuth2 != nil && hc.OAuth2.ClientCertificateKey != "":
		return inline("oauth2.client_certificate_key", "client_certificate_key_file")
	case hc.TLSConfig.Key != "":
		return inline("tls_config.key", "key_file")
	case hc.OAuth2 != nil && hc.OAuth2.TLSConfig.Key != "":
		return inline("oauth2.tls_config.key", "key_file")
	case len(hc.ProxyConnectHeader) > 0:
		return fieldErr("proxy_connect_header", errors.New("is not supported: its values are secrets written in the config text"))
	}
	if hc.HTTPHeaders != nil {
		for _, n := range slices.Sorted(maps.Keys(hc.HTTPHeaders.Headers)) {
			if len(hc.HTTPHeaders.Headers[n].Secrets) > 0 {
				return inline("http_headers."+n+".secrets", "files")
			}
		}
	}
	return nil
}

// NewClient builds the client of the block: config.NewClientFromConfig,
// fleetgate's User-Agent, and timeout (0: none) on every request. name
// labels the client's connections in go-conntrack.
func (c *Config) NewClient(name string, timeout time.Duration) (*http.Client, error) {
	hc, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cl, err := config.NewClientFromConfig(hc, name, config.WithUserAgent(UserAgent))
	if err != nil {
		return nil, err
	}
	cl.Timeout = timeout
	return cl, nil
}
