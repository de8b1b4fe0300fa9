package promapi

import (
	"fmt"
	"math"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/query/federation"
)

// TestResultsCacheByteEquality: a cached range query answer equals the
// uncached one byte for byte, on miss and on hit.
func TestResultsCacheByteEquality(t *testing.T) {
	now := time.Now().Truncate(time.Minute).UnixMilli()
	st := openStore(t)
	from := now - 3*dayMs
	fill(t, st, from, now, 60_000, func(ts int64) float64 { return float64(ts/1000) * 1.5 },
		labels.FromStrings("__name__", "req_total", "job", "api", "cluster", "eu-1"),
		labels.FromStrings("__name__", "req_total", "job", "db", "cluster", "eu-1"))
	fill(t, st, from, now, 60_000, func(ts int64) float64 { return math.Sin(float64(ts) / 1e7) },
		labels.FromStrings("__name__", "temp", "job", "api", "cluster", "us-1"))
	// A series that exists only on the middle day.
	fill(t, st, from+dayMs+3600_000, from+dayMs+7200_000, 60_000, func(int64) float64 { return 7 },
		labels.FromStrings("__name__", "temp", "job", "batch", "cluster", "us-1"))

	cached, _ := serveAPI(t, st, Config{})
	plain, _ := serveAPI(t, st, Config{ResultsCache: CacheConfig{Disabled: true}})

	step := int64(300_000)
	alignedStart := (from/step + 1) * step
	past := now - 2*3600_000
	for _, tc := range []struct {
		name       string
		query      string
		start, end int64
		step       int64
		first      string // header of the first request
		second     string // header of the repeat
	}{
		{"counter rate over days", "rate(req_total[5m])", alignedStart, past, step, "miss", "hit"},
		{"aggregation", "sum by (cluster) (req_total)", alignedStart, past, step, "miss", "hit"},
		{"float gauge", "temp", alignedStart, past, step, "miss", "hit"},
		{"offset and subquery", "max_over_time(temp[1h:5m] offset 1h)", alignedStart, past, step, "miss", "hit"},
		{"scalar", "1 + 2", alignedStart, past, step, "miss", "hit"},
		{"empty answer", "does_not_exist", alignedStart, past, step, "miss", "hit"},
		{"range reaching now is never all cached", "temp", alignedStart, (now / step) * step, step, "miss", "miss"},
		{"not step-aligned start bypasses", "temp", alignedStart + 1000, past, step, "bypass", "bypass"},
		{"@ end() bypasses", "temp @ end()", alignedStart, past, step, "bypass", "bypass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := url.Values{"query": {tc.query}, "start": {model.Time(tc.start).String()}, "end": {model.Time(tc.end).String()}, "step": {fmt.Sprint(tc.step / 1000)}}
			code, _, _, want := get(t, plain.URL, "/api/v1/query_range", p)
			require.Equal(t, 200, code, "%s", want)
			if tc.query != "does_not_exist" {
				require.Contains(t, string(want), `"values":[[`)
			}
			for i, wantHeader := range []string{tc.first, tc.second} {
				code, _, h, got := get(t, cached.URL, "/api/v1/query_range", p)
				require.Equal(t, 200, code)
				require.Equal(t, wantHeader, h.Get(cacheHeader), "request %d", i)
				require.Equal(t, string(want), string(got), "request %d (%s)", i, h.Get(cacheHeader))
			}
		})
	}

	t.Run("errors come from the API itself", func(t *testing.T) {
		p := url.Values{"query": {"rate(temp)"}, "start": {model.Time(alignedStart).String()}, "end": {model.Time(past).String()}, "step": {"300"}}
		code, e, _, _ := get(t, cached.URL, "/api/v1/query_range", p)
		require.Equal(t, 400, code)
		require.Equal(t, "bad_data", e.ErrorType)
		p.Set("step", "0")
		p.Set("query", "temp")
		code, _, _, _ = get(t, cached.URL, "/api/v1/query_range", p)
		require.Equal(t, 400, code)
	})
}

// TestResultsCacheNeverCachesPartialAnswers: an answer with a missing
// cluster is served (with its warning) but not cached.
func TestResultsCacheNeverCachesPartialAnswers(t *testing.T) {
	now := time.Now().Truncate(time.Minute).UnixMilli()
	local := openStore(t)
	fill(t, local, now-3*3600_000, now, 15_000, func(int64) float64 { return 1 }, labels.FromStrings("__name__", "up", "cluster", "local"))
	dead, err := federation.NewSource("dead", labels.FromStrings("cluster", "dead"), fleet.QueryEndpoint{Type: fleet.QueryPrometheus, URL: deadURL(t)}, nil, quiet)
	require.NoError(t, err)
	srv, _ := serveAPI(t, federation.New(local, []*federation.Source{dead}), Config{})
	step := int64(60_000)
	end := (now - 3600_000) / step * step
	p := url.Values{"query": {"sum(up)"}, "start": {model.Time(end - 3600_000).String()}, "end": {model.Time(end).String()}, "step": {"60"}}
	for range 2 {
		code, e, h, _ := get(t, srv.URL, "/api/v1/query_range", p)
		require.Equal(t, 200, code)
		require.Equal(t, "bypass", h.Get(cacheHeader))
		require.Len(t, e.Warnings, 1)
		require.Contains(t, e.Warnings[0], `cluster "dead"`)
	}
}
