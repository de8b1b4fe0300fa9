package lokiapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/access"
)

func TestLogQLParseErrors(t *testing.T) {
	api := New(nil)
	for q, want := range map[string]string{
		`{}`:                            "at least one matcher",
		`{a=""}`:                        "at least one matcher",
		`{a="b"`:                        "no closing }",
		`{a="b"} |= `:                   "expected a string",
		`{a="b"} |~ "("`:                "line filter",
		`rate({a="b"})`:                 `expected "["`,
		`sum by (a (rate({a="b"}[1m]))`: "",
		`topk(3, rate({a="b"}[1m]))`:    "topk",
		`rate({a="b"}[1m]) > 2`:         "unexpected",
	} {
		_, _, err := parseLogQL(q, api.parser)
		require.Error(t, err, q)
		require.Contains(t, err.Error(), want, q)
	}
	le, _, err := parseLogQL("{app=~\"a|b\", ns!=\"x\"} |= `raw\\str` != \"no\" |~ \"e.r\" !~ \"z+\"", api.parser)
	require.NoError(t, err)
	require.Len(t, le.matchers, 2)
	require.Len(t, le.filters, 4)
	require.True(t, le.keep(`raw\str error`))
	require.False(t, le.keep(`raw\str error no`))
}

// The Loki metadata endpoints reject an end before start like query_range.
func TestLokiMetadataRejectsEndBeforeStart(t *testing.T) {
	mux := http.NewServeMux()
	New(nil).Register(mux)
	for _, path := range []string{"/loki/api/v1/labels", "/loki/api/v1/label/app/values", "/loki/api/v1/series?match[]={a=\"b\"}"} {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		w := httptest.NewRecorder()
		withScope(mux, access.All()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, path+sep+"start=2000&end=1000", nil))
		require.Equal(t, http.StatusBadRequest, w.Code, path)
		require.Contains(t, w.Body.String(), "before start", path)
	}
}
