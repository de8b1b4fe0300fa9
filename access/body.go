package access

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
)

// MaxAdminBody is the largest admin request body (bytes).
const MaxAdminBody = 64 << 10

// MaxAdminText is the largest free-text field (a reason, a replica name) of
// an admin request body, in bytes.
const MaxAdminText = 1 << 10

// CheckAdminText refuses (400, and writes the error) a free-text field of
// an admin request longer than MaxAdminText.
func CheckAdminText(w http.ResponseWriter, field, s string) bool {
	if len(s) > MaxAdminText {
		writeError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("%s: %d bytes, at most %d", field, len(s), MaxAdminText))
		return false
	}
	return true
}

// DecodeAdminBody decodes the JSON body of an admin request into v and
// writes the error itself when it returns false: a body must be
// application/json (415), at most MaxAdminBody bytes (413), one JSON object
// with no unknown fields and nothing after it (400), and arrive in time
// (408). No body at all leaves v as it is (fine where nothing is needed).
func DecodeAdminBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxAdminBody))
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		writeError(w, http.StatusRequestTimeout, "bad_data", fmt.Sprintf("request body: not received in time: %v", err))
		return false
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "bad_data", fmt.Sprintf("request body: more than %d bytes", MaxAdminBody))
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("request body: %v", err))
		return false
	case len(bytes.TrimSpace(body)) == 0:
		return true
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "bad_data",
			fmt.Sprintf("Content-Type %q: the request body must be application/json", r.Header.Get("Content-Type")))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("request body: %v", err))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad_data", "request body: data after the JSON object")
		return false
	}
	return true
}
