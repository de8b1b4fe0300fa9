package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// Server timeouts of every HTTP listener. Bodies get their own deadline per
// route (bodyDeadline); WriteTimeout is the query timeout plus writeMargin.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	writeMargin       = 30 * time.Second
)

// httpListener is a bound HTTP listener and how to serve it: plainly, with
// the legacy --web.tls-* flags, or through exporter-toolkit's web config
// (TLS, client certificates, basic auth), as Prometheus does.
type httpListener struct {
	srv       *http.Server
	ln        net.Listener
	webConfig string
	logger    *slog.Logger
}

// Addr is where the listener is bound.
func (l *httpListener) Addr() net.Addr { return l.ln.Addr() }

// Serve serves until Shutdown.
func (l *httpListener) Serve() error {
	var err error
	if l.webConfig != "" {
		err = web.Serve(l.ln, l.srv, &web.FlagConfig{WebConfigFile: &l.webConfig}, l.logger)
	} else {
		err = l.srv.Serve(l.ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// checkWebFlags refuses --web.config.file together with the legacy TLS
// flags, and validates the web config file.
func checkWebFlags(f *flags) error {
	if f.webConfigFile == "" {
		if f.clientCA != "" && (f.tlsCert == "" || f.tlsKey == "") {
			return errors.New("--web.client-ca-file needs --web.tls-cert-file and --web.tls-key-file")
		}
		return nil
	}
	if f.tlsCert != "" || f.tlsKey != "" || f.clientCA != "" {
		return errors.New("--web.config.file cannot be combined with --web.tls-cert-file, --web.tls-key-file or --web.client-ca-file: put TLS in the web config (tls_server_config)")
	}
	if err := web.Validate(f.webConfigFile); err != nil {
		return fmt.Errorf("--web.config.file %s: %w", f.webConfigFile, err)
	}
	return nil
}

// listen binds addr with fleetgate's server timeouts; writeTimeout bounds
// the time to answer one request.
func listen(f *flags, addr string, h http.Handler, writeTimeout time.Duration, logger *slog.Logger) (*httpListener, error) {
	if err := checkWebFlags(f); err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		WriteTimeout:      writeTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	var tc *tls.Config
	if f.webConfigFile == "" && f.tlsCert != "" {
		var err error
		if tc, err = legacyTLS(f); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	l := &httpListener{srv: srv, ln: ln, webConfig: f.webConfigFile, logger: logger}
	if tc != nil {
		srv.TLSConfig = tc
		l.ln = tls.NewListener(ln, tc)
	}
	return l, nil
}

// legacyTLS is the TLS config of --web.tls-cert-file/--web.tls-key-file,
// with client certificates verified by --web.client-ca-file when given.
func legacyTLS(f *flags) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--web.tls-cert-file/--web.tls-key-file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			return nil, fmt.Errorf("--web.client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--web.client-ca-file %s: no PEM certificates", f.clientCA)
		}
		// Clients may still authenticate with a bearer token instead.
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// grpcTLS is the TLS config of the OTLP gRPC listener: the web config's
// TLS, or the legacy flags'; nil for plaintext.
func grpcTLS(f *flags) (*tls.Config, error) {
	if f.webConfigFile != "" {
		c, err := readWebConfig(f.webConfigFile)
		if err != nil {
			return nil, err
		}
		if !c.TLSConfig.IsEnabled() {
			return nil, nil
		}
		tc, err := web.ConfigToTLSConfig(&c.TLSConfig)
		if err != nil {
			return nil, fmt.Errorf("--web.config.file %s: %w", f.webConfigFile, err)
		}
		return tc, nil
	}
	if f.tlsCert == "" {
		return nil, nil
	}
	return legacyTLS(f)
}

// readWebConfig reads a web config file the way exporter-toolkit does.
func readWebConfig(path string) (*web.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--web.config.file: %w", err)
	}
	c := &web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	return c, nil
}

// basicAuthCheck answers whether the web config currently has
// basic_auth_users (then exporter-toolkit has verified every Basic
// credential before fleetgate sees it). exporter-toolkit re-reads the file
// on every request; this re-reads it when it changes.
type basicAuthCheck struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	has  bool
}

func (b *basicAuthCheck) verified() bool {
	if b == nil || b.path == "" {
		return false
	}
	st, err := os.Stat(b.path)
	if err != nil {
		return false // exporter-toolkit answers 500 to every request then
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !st.ModTime().Equal(b.mod) || st.Size() != b.size {
		c, err := readWebConfig(b.path)
		b.mod, b.size, b.has = st.ModTime(), st.Size(), err == nil && len(c.Users) > 0
	}
	return b.has
}
