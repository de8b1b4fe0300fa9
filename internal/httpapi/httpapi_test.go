package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// The envelopes byte for byte: clients of Prometheus's API parse them.
func TestEnvelopes(t *testing.T) {
	w := httptest.NewRecorder()
	WriteSuccess(w, []string{"a"})
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	require.Equal(t, `{"status":"success","data":["a"]}`+"\n", w.Body.String())

	w = httptest.NewRecorder()
	WriteError(w, http.StatusNotFound, ErrNotFound, `cluster "x" is not known`)
	require.Equal(t, http.StatusNotFound, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	require.Equal(t, `{"status":"error","errorType":"not_found","error":"cluster \"x\" is not known"}`+"\n", w.Body.String())
}
