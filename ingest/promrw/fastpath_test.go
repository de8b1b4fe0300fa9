package promrw

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
)

type metaSink map[string]metadata.Metadata

func (m metaSink) SetMetadata(cluster, family string, md metadata.Metadata) {
	m[cluster+"/"+family] = md
}

// TestKnownSeriesFastPath sends the same series again and again, as senders
// do, so that the pipeline's series cache answers, and checks that what is
// stored and the metadata are what the full path gives.
func TestKnownSeriesFastPath(t *testing.T) {
	t.Setenv("FP_TOKEN", "fp-token")
	db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	defer db.Close()
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: []fleet.ClusterConfig{{Name: "c1", Region: "eu", Credentials: fleet.Credentials{BearerTokenEnv: "FP_TOKEN"}}}})
	require.NoError(t, err)
	meta := metaSink{}
	p, err := pipeline.New(pipeline.Config{}, reg, db, meta, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	h, err := NewHandler(Config{}, p, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	post := func(body []byte, v2 bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(snappy.Encode(nil, body)))
		req.Header.Set("Authorization", "Bearer fp-token")
		req.Header.Set("Content-Encoding", "snappy")
		if v2 {
			req.Header.Set("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
		} else {
			req.Header.Set("Content-Type", "application/x-protobuf")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for ts := int64(1000); ts <= 3000; ts += 1000 {
		r1 := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}}, Samples: []prompb.Sample{{Value: float64(ts), Timestamp: ts}}},
			// unsorted labels, as some senders send them
			{Labels: []prompb.Label{{Name: "job", Value: "b"}, {Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: float64(ts), Timestamp: ts}}},
		}}
		b1, err := r1.Marshal()
		require.NoError(t, err)
		rec := post(b1, false)
		require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())

		help := "first help"
		if ts == 3000 {
			help = "changed help"
		}
		r2 := &writev2.Request{Symbols: []string{"", "__name__", "requests_total", "job", "c", help}, Timeseries: []writev2.TimeSeries{{
			LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []writev2.Sample{{Value: float64(ts), Timestamp: ts}},
			Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: 5},
		}}}
		b2, err := r2.Marshal()
		require.NoError(t, err)
		rec = post(b2, true)
		require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
		require.Equal(t, "1", rec.Header().Get(headerSamplesWritten))
		require.Equal(t, help, meta["c1/requests_total"].Help, "metadata changes reach the store")
	}
	// A cached series that now claims another cluster is still a conflict.
	bad := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}, {Name: "cluster", Value: "other"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 4000}}},
	}}
	bb, err := bad.Marshal()
	require.NoError(t, err)
	rec := post(bb, false)
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), `claims cluster "other"`)

	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	got := map[string][]float64{}
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			_, v := it.At()
			got[ss.At().Labels().String()] = append(got[ss.At().Labels().String()], v)
		}
	}
	require.NoError(t, ss.Err())
	require.Equal(t, map[string][]float64{
		`{__name__="up", cluster="c1", job="a", region="eu"}`:             {1000, 2000, 3000},
		`{__name__="up", cluster="c1", job="b", region="eu"}`:             {1000, 2000, 3000},
		`{__name__="requests_total", cluster="c1", job="c", region="eu"}`: {1000, 2000, 3000},
	}, got)
}
