package federation

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/store/metrics"
)

func openCorpusStore(t testing.TB) *metrics.Store {
	s, err := metrics.Open(metrics.Config{
		Path:            t.TempDir(),
		MaxExemplars:    100_000,
		BlockDuration:   model.Duration(24 * time.Hour),
		StartTimestamps: true,
	}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return s
}

// splitStorage stores every series in one of two TSDBs (by label hash) and
// queries them through the federation: A as the embedded store, B as a
// remote source read over HTTP with the remote-read protocol.
type splitStorage struct {
	a, b *metrics.Store
	srv  *httptest.Server
	fed  *Queryable
}

func newSplitStorage(t testing.TB) storage.Storage {
	s := &splitStorage{a: openCorpusStore(t), b: openCorpusStore(t)}
	h := remote.NewReadHandler(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), s.b,
		func() config.Config { return config.DefaultConfig }, 0, 10, 1048576)
	s.srv = httptest.NewServer(h)
	src, err := NewSource("b", labels.EmptyLabels(), fleet.QueryEndpoint{URL: s.srv.URL + "/api/v1/read"}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	s.fed = New(s.a, []*Source{src})
	return s
}

func (s *splitStorage) Querier(mint, maxt int64) (storage.Querier, error) {
	return s.fed.Querier(mint, maxt)
}

func (s *splitStorage) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return s.fed.ChunkQuerier(mint, maxt)
}

func (s *splitStorage) Appender(context.Context) storage.Appender {
	panic("the corpus appends through AppenderV2")
}

func (s *splitStorage) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &splitAppender{a: s.a.AppenderV2(ctx), b: s.b.AppenderV2(ctx)}
}

func (s *splitStorage) StartTime() (int64, error) { return s.a.StartTime() }

func (s *splitStorage) Close() error {
	s.srv.Close()
	return errors.Join(s.a.Close(), s.b.Close())
}

type splitAppender struct{ a, b storage.AppenderV2 }

func (s *splitAppender) Append(_ storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	app := s.a
	if ls.Hash()%2 == 1 {
		app = s.b
	}
	_, err := app.Append(0, ls, st, t, v, h, fh, opts)
	return 0, err
}

func (s *splitAppender) Commit() error   { return errors.Join(s.a.Commit(), s.b.Commit()) }
func (s *splitAppender) Rollback() error { return errors.Join(s.a.Rollback(), s.b.Rollback()) }

// TestFederatedPromQLCorpus runs Prometheus's PromQL corpus through the
// federated Queryable: the answers over two TSDBs, one of them read over
// HTTP remote-read, must equal the answers over one.
func TestFederatedPromQLCorpus(t *testing.T) {
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	promqltest.RunBuiltinTestsWithStorage(t, engine, newSplitStorage)
}
