package metrics

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// newCorpusStore opens fleetgate's embedded store with the options the
// corpus needs: it loads long series in order, so a day-long head block.
func newCorpusStore(t testing.TB) storage.Storage {
	s, err := Open(Config{
		Path:            t.TempDir(),
		MaxExemplars:    100_000,
		BlockDuration:   model.Duration(24 * time.Hour),
		StartTimestamps: true,
	}, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return corpusStore{s}
}

// corpusStore gives the corpus loader the TSDB's v1 appender (fleetgate
// itself appends through AppenderV2, behind the guard).
type corpusStore struct{ *Store }

func (c corpusStore) Appender(ctx context.Context) storage.Appender {
	return c.g.inst.Load().db.Appender(ctx)
}

// TestPromQLCorpus runs Prometheus's own PromQL test corpus over fleetgate's
// embedded storage layer.
func TestPromQLCorpus(t *testing.T) {
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	promqltest.RunBuiltinTestsWithStorage(t, engine, newCorpusStore)
}
