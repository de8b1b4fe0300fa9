package loki

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
)

func stream(lbls string, es ...push.Entry) *push.PushRequest {
	return &push.PushRequest{Streams: []push.Stream{{Labels: lbls, Entries: es}}}
}

// Lines with negative, 1970 or far-future timestamps, or older than the log
// store keeps, are refused (400 naming the stream and the bound) instead of
// a 204 for lines never stored; nothing of such a push is stored.
func TestPushTimeBounds(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		ts   time.Time
		msg  string
	}{
		{"negative", time.Unix(0, -5), "line timestamp 1969-12-31T23:59:59.999999995Z (-5 ns) is not after 1970-01-01"},
		{"zero", time.Unix(0, 0), "(0 ns) is not after 1970-01-01"},
		{"an hour ahead", now.Add(time.Hour), "is more than ingest.max_future (10m) ahead of now"},
		{"older than the store", now.Add(-8 * 24 * time.Hour), "is older than logs_storage.retention (1w)"},
	} {
		for _, format := range []string{"json", "protobuf"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				e := newEnv(t, logtrace.Config{LogsMaxAge: 7 * 24 * time.Hour})
				req := stream(`{app="api"}`, push.Entry{Timestamp: now, Line: "fine"}, push.Entry{Timestamp: tc.ts, Line: "bad"})
				ctype, body := encode(t, req, format, "")
				code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
				require.Equal(t, 400, code, msg)
				require.Contains(t, msg, `stream {app="api", cluster="eu-1", region="eu-west-1"}: line`)
				require.Contains(t, msg, tc.msg)
				require.Contains(t, msg, "nothing of this push was stored")
				require.Empty(t, storedLines(t, e))

				code, msg = e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", mustEncode(t, stream(`{app="api"}`, push.Entry{Timestamp: now, Line: "fine"}), format))
				require.Equal(t, 204, code, msg)
				require.Len(t, storedLines(t, e), 1)
			})
		}
	}
}

func mustEncode(t *testing.T, req *push.PushRequest, format string) []byte {
	_, b := encode(t, req, format, "")
	return b
}

func storedLines(t *testing.T, e *env) []string {
	code, body := e.do(t, "GET", "/loki/api/v1/query_range?query="+`%7Bcluster%3D%22eu-1%22%7D`+"&start=0&end="+strconv.FormatInt(time.Now().Add(time.Hour).UnixNano(), 10)+"&limit=1000", "", "", "", nil)
	require.Equal(t, 200, code, body)
	var out []string
	for _, l := range []string{"fine", "bad"} {
		for i := 0; i+len(l) <= len(body); i++ {
			if body[i:i+len(l)] == l {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// Structured metadata `cluster` naming another cluster is refused; its own
// cluster is fine; identity.on_conflict: overwrite rewrites it.
func TestStructuredMetadataIdentity(t *testing.T) {
	now := time.Now()
	req := func(v string) *push.PushRequest {
		return stream(`{app="api"}`, push.Entry{Timestamp: now, Line: "x", StructuredMetadata: push.LabelsAdapter{{Name: "cluster", Value: v}, {Name: "trace_id", Value: "1"}}})
	}
	e := newEnv(t, logtrace.Config{})
	ctype, body := encode(t, req("us-1"), "protobuf", "")
	code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 400, code, msg)
	require.Contains(t, msg, `has structured metadata cluster="us-1", another cluster than the credential proves ("eu-1")`)

	_, body = encode(t, req("eu-1"), "protobuf", "")
	code, msg = e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 204, code, msg)

	ov := newEnvWith(t, logtrace.Config{}, func(fc *fleet.Config) { fc.OnConflict = fleet.ConflictOverwrite })
	_, body = encode(t, req("us-1"), "json", "")
	code, msg = ov.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", "application/json", "", body)
	require.Equal(t, 204, code, msg)
	_, got := ov.do(t, "GET", "/loki/api/v1/query_range?query=%7Bapp%3D%22api%22%7D&start=0&end="+strconv.FormatInt(now.Add(time.Hour).UnixNano(), 10), "", "", "", nil)
	require.Contains(t, got, `"cluster":"eu-1"`)
	require.NotContains(t, got, "us-1")
}

// Many bad lines: the 400 lists the first ten problems and counts the rest.
func TestPushErrorsCapped(t *testing.T) {
	e := newEnv(t, logtrace.Config{})
	var es []push.Entry
	for i := range 1000 {
		es = append(es, push.Entry{Timestamp: time.Unix(0, -int64(i+1)), Line: fmt.Sprint(i)})
	}
	ctype, body := encode(t, stream(`{app="api"}`, es...), "protobuf", "")
	code, msg := e.do(t, "POST", "/loki/api/v1/push", "tok-eu-1", ctype, "", body)
	require.Equal(t, 400, code)
	require.Contains(t, msg, "1000 log lines rejected")
	require.Contains(t, msg, "; and 990 more")
	require.Less(t, len(msg), 6000)
}
