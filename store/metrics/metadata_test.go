package metrics

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/stretchr/testify/require"
)

// Metric metadata a sender reported is saved while fleetgate runs, not only
// at a clean shutdown: after a crash (no Close) it is restored at open.
func TestMetadataSurvivesACrash(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Path: dir}
	s, err := Open(cfg, nil, quietLogger, WithMetadataSaveInterval(10*time.Millisecond))
	require.NoError(t, err)
	running(t, s)
	md := metadata.Metadata{Type: model.MetricTypeCounter, Help: "Requests.", Unit: "requests"}
	s.Metadata().SetMetadata("eu-1", "http_requests_total", md)
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, metadataFile))
		return err == nil && len(b) > 2
	}, 10*time.Second, 10*time.Millisecond, "saved without a Close")

	// A crash: the store is never closed. A second store opens the same
	// directory's metadata (the TSDB lock is not involved in it).
	m := NewMetadata()
	require.NoError(t, m.load(filepath.Join(dir, metadataFile)))
	require.Equal(t, map[string][]Entry{"http_requests_total": {{Type: md.Type, Help: md.Help, Unit: md.Unit}}}, m.List("", -1, 0))
	require.False(t, s.meta.dirty.Load(), "nothing left to save")
	require.NoError(t, s.Close())
}
