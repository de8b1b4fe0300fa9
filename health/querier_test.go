package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/stretchr/testify/require"
)

func TestEngineQuerier(t *testing.T) {
	st := promqltest.LoadedStorage(t, `
load 1m
  up{cluster="eu-1",job="a"} 1 1 1
  up{cluster="eu-1",job="b"} 0 0 0
`)
	eng := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	q := NewEngineQuerier(eng, st)
	ts := time.Unix(120, 0)
	v, err := q.Instant(context.Background(), expand(`avg(up{cluster="$cluster"})`, "eu-1"), ts)
	require.NoError(t, err)
	require.Len(t, v, 1)
	require.Equal(t, model.SampleValue(0.5), v[0].Value)

	v, err = q.Instant(context.Background(), `scalar(vector(3))`, ts)
	require.NoError(t, err)
	require.Equal(t, model.SampleValue(3), v[0].Value)

	m, err := q.Range(context.Background(), `sum(up)`, time.Unix(0, 0), ts, time.Minute)
	require.NoError(t, err)
	require.Len(t, m, 1)
	require.Len(t, m[0].Values, 3)

	_, err = q.Instant(context.Background(), `sum(`, ts)
	require.ErrorContains(t, err, "parsing")
}

func TestAPIQuerier(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.ParseForm())
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/query":
			require.Equal(t, `avg(up{cluster="eu-1"})`, r.Form.Get("query"))
			_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[120,"0.75"]}]}}`))
		case "/api/v1/query_range":
			_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[60,"1"],[120,"2"]]}]}}`))
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	q, err := NewAPIQuerier(srv.URL, nil)
	require.NoError(t, err)
	v, err := q.Instant(context.Background(), `avg(up{cluster="eu-1"})`, time.Unix(120, 0))
	require.NoError(t, err)
	require.Equal(t, model.SampleValue(0.75), v[0].Value)
	m, err := q.Range(context.Background(), `x`, time.Unix(60, 0), time.Unix(120, 0), time.Minute)
	require.NoError(t, err)
	require.Len(t, m[0].Values, 2)
}
