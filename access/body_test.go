package access

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// adminRequest has the shape of fleetgate's admin bodies.
type adminRequest struct {
	Reason   string   `json:"reason"`
	Clusters []string `json:"clusters"`
	Duration string   `json:"duration"`
	Replica  string   `json:"replica"`
	Force    bool     `json:"force"`
}

// FuzzAdminBody: DecodeAdminBody never panics; it either accepts (and
// writes nothing) a body that is empty or one strict JSON object sent as
// application/json, or answers 400, 413 or 415 in Prometheus's error shape.
func FuzzAdminBody(f *testing.F) {
	for _, s := range []string{
		`{"reason":"maintenance","duration":"10m"}`, `{"clusters":["us-1"]}`, `{"replica":"r1","force":true}`,
		`{"unpin":true}`, `{"reason":"x"} {}`, `{"reason":"x"}garbage`, `{"reason":12}`, `[]`, `null`, "", " \n",
		`{"reason":"` + strings.Repeat("x", MaxAdminBody) + `"}`,
	} {
		f.Add(s, "application/json")
	}
	f.Add(`{"reason":"x"}`, "application/json; charset=utf-8")
	f.Add("reason=x", "text/plain")
	f.Add(`{"reason":"x"}`, "")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/admin", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		var v adminRequest
		if DecodeAdminBody(w, r, &v) {
			if w.Body.Len() != 0 {
				t.Fatalf("accepted %q (%s) and wrote %q", body, contentType, w.Body)
			}
			if strings.TrimSpace(body) == "" {
				return
			}
			if mt, _, err := mime.ParseMediaType(contentType); err != nil || mt != "application/json" {
				t.Fatalf("accepted %q as %q", body, contentType)
			}
			dec := json.NewDecoder(strings.NewReader(body))
			dec.DisallowUnknownFields()
			var again adminRequest
			if err := dec.Decode(&again); err != nil || dec.More() {
				t.Fatalf("accepted %q, which is not one strict JSON object: %v", body, err)
			}
			return
		}
		switch w.Code {
		case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		case http.StatusRequestEntityTooLarge:
			if len(body) <= MaxAdminBody {
				t.Fatalf("413 for %d bytes", len(body))
			}
		default:
			t.Fatalf("%q (%s): %d %s", body, contentType, w.Code, w.Body)
		}
		var e struct{ Status, ErrorType, Error string }
		if err := json.Unmarshal(bytes.TrimSpace(w.Body.Bytes()), &e); err != nil || e.Status != "error" || e.Error == "" {
			t.Fatalf("%q (%s): error body %q", body, contentType, w.Body)
		}
	})
}

// TestCheckAdminText: a free-text field of MaxAdminText bytes passes, one
// byte more is a 400 naming the field.
func TestCheckAdminText(t *testing.T) {
	w := httptest.NewRecorder()
	if !CheckAdminText(w, "reason", strings.Repeat("x", MaxAdminText)) || w.Code != http.StatusOK {
		t.Fatalf("%d bytes refused: %d %s", MaxAdminText, w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	if CheckAdminText(w, "replica", strings.Repeat("x", MaxAdminText+1)) {
		t.Fatal("too long, accepted")
	}
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"error":"replica: 1025 bytes, at most 1024"`) {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}

// TestVisibleAndActor: without a scope nothing is visible (fail closed);
// without a principal there is no actor.
func TestVisibleAndActor(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	if Visible(r, "eu-1") || Actor(r) != "" {
		t.Fatal("a request without scope or principal sees a cluster or has an actor")
	}
	r = r.WithContext(withPrincipal(WithScope(r.Context(), Clusters("eu-1")), Principal{Name: "oncall"}))
	if !Visible(r, "eu-1") || Visible(r, "us-1") || Actor(r) != "oncall" {
		t.Fatalf("scope eu-1, actor oncall: visible eu-1=%v us-1=%v actor=%q", Visible(r, "eu-1"), Visible(r, "us-1"), Actor(r))
	}
}
