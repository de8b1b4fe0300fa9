// Package httpclienttest serves outbound-client tests: a TLS server whose
// certificate is written to a CA file, and a bearer token kept in a file
// that a test rotates while the server requires the current one.
package httpclienttest

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TLSServer starts an httptest TLS server for h and returns it with the
// path of a PEM file holding its certificate (the CA to trust).
func TLSServer(t testing.TB, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	require.NoError(t, os.WriteFile(ca, b, 0o600))
	return srv, ca
}

// Token is a bearer token in a file. Require lets through only requests
// that carry the token last written, so a client that read the file once
// fails after Rotate.
type Token struct {
	file string
	mu   sync.Mutex
	cur  string
	seen []string
}

// NewToken writes tok to a new file.
func NewToken(t testing.TB, tok string) *Token {
	t.Helper()
	k := &Token{file: filepath.Join(t.TempDir(), "token")}
	k.Rotate(t, tok)
	return k
}

// File is the token file's path.
func (k *Token) File() string { return k.file }

// Rotate writes tok to the file (with a trailing newline, as editors and
// Kubernetes secrets do) and makes Require ask for it from now on.
func (k *Token) Rotate(t testing.TB, tok string) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	tmp := k.file + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(tok+"\n"), 0o600))
	require.NoError(t, os.Rename(tmp, k.file))
	k.cur = tok
}

// Require answers 401 unless the request carries "Authorization: Bearer
// <current token>"; it records every Authorization header it sees.
func (k *Token) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		k.mu.Lock()
		k.seen = append(k.seen, got)
		ok := got == "Bearer "+k.cur
		k.mu.Unlock()
		if !ok {
			http.Error(w, "wrong or missing bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Seen is every Authorization header Require saw, in order.
func (k *Token) Seen() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.seen...)
}
