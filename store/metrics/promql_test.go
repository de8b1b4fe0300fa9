package metrics

import (
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
	return s
}

// TestPromQLCorpus runs Prometheus's own PromQL test corpus over fleetgate's
// embedded storage layer.
func TestPromQLCorpus(t *testing.T) {
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	promqltest.RunBuiltinTestsWithStorage(t, engine, newCorpusStore)
}
