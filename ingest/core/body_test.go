package core

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// timeoutReader fails as a connection whose read deadline passed (a
// trickled body cut off by the listener).
type timeoutReader struct{}

func (timeoutReader) Read([]byte) (int, error) { return 0, os.ErrDeadlineExceeded }

func TestReadBody(t *testing.T) {
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	lim := BodyLimits{MaxBytes: 100, Key: "x.max_request_bytes", Gzip: true, MaxDecodedBytes: 1000}
	for _, tc := range []struct {
		name       string
		body       io.Reader
		length     int64 // -1: unknown (chunked)
		encoding   string
		lim        BodyLimits
		wantStatus int
		wantMsg    string
		want       string
	}{
		{"fits", strings.NewReader("hello"), -1, "", lim, 0, "", "hello"},
		{"Content-Length too large", strings.NewReader(strings.Repeat("a", 101)), 101, "", lim, 413, "request body is 101 bytes, more than x.max_request_bytes (100)", ""},
		{"chunked body too large", strings.NewReader(strings.Repeat("a", 101)), -1, "", lim, 413, "request body is more than x.max_request_bytes (100)", ""},
		{"exactly the limit", strings.NewReader(strings.Repeat("a", 100)), -1, "", lim, 0, "", strings.Repeat("a", 100)},
		{"gzip", bytes.NewReader(gz([]byte("hello"))), -1, "gzip", lim, 0, "", "hello"},
		{"gzip decoded too large", bytes.NewReader(gz(make([]byte, 1001))), -1, "gzip", lim, 413, "decoded request body is more than 1000 bytes", ""},
		{"not gzip", strings.NewReader("hello"), -1, "gzip", lim, 400, "decoding gzip body", ""},
		{"unknown encoding", strings.NewReader("hello"), -1, "br", lim, 415, `unsupported Content-Encoding "br"`, ""},
		{"encoding left to the caller", strings.NewReader("hello"), -1, "snappy", BodyLimits{MaxBytes: 100, Key: "k"}, 0, "", "hello"},
		{"trickled body cut off", io.MultiReader(strings.NewReader("he"), timeoutReader{}), -1, "", lim, 400, "reading request body: i/o timeout", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", tc.body)
			r.ContentLength = tc.length
			r.Header.Set("Content-Encoding", tc.encoding)
			got, err := ReadBody(r, make([]byte, 0, 4), tc.lim)
			if tc.wantStatus == 0 {
				require.NoError(t, err)
				require.Equal(t, tc.want, string(got))
				return
			}
			require.Error(t, err)
			var ce *Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.wantStatus, ErrorStatus(err))
			require.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}
