package remotewrite

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var quiet = slog.New(slog.DiscardHandler)

// receiver is a real Prometheus remote-write receiver over a TSDB.
func receiver(t *testing.T) (*httptest.Server, *tsdb.DB, *atomic.Bool) {
	db, err := tsdb.Open(t.TempDir(), quiet, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	h := remote.NewWriteHandler(quiet, prometheus.NewRegistry(), db, remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType}, false, false)
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, db, &down
}

func count(t *testing.T, db *tsdb.DB, name string) int {
	q, err := db.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", name))
	n := 0
	for ss.Next() {
		require.Equal(t, "eu-1", ss.At().Labels().Get("cluster"))
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			n++
		}
	}
	return n
}

// recordsRead is prometheus_wal_watcher_records_read_total by consumer.
func recordsRead(t require.TestingT, g prometheus.Gatherer) map[string]float64 {
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "prometheus_wal_watcher_records_read_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "consumer" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func TestForwardThroughWAL(t *testing.T) {
	good, goodDB, _ := receiver(t)
	flaky, flakyDB, flakyDown := receiver(t)
	// A destination that never answers in time must not hold up the others.
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		http.Error(w, "gave up", http.StatusServiceUnavailable)
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) })
	flakyDown.Store(true)

	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	src, err := tsdb.Open(dir, quiet, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	fast := QueueConfig{BatchSendDeadline: model.Duration(100 * time.Millisecond), MinBackoff: model.Duration(50 * time.Millisecond), MaxBackoff: model.Duration(200 * time.Millisecond)}
	fw, err := New(Config{Destinations: []Destination{
		{Name: "good", URL: good.URL, Queue: fast},
		{Name: "flaky", URL: flaky.URL, Queue: fast, Protocol: "2.0"},
		{Name: "stuck", URL: stuck.URL, Queue: fast, Timeout: model.Duration(5 * time.Second)},
	}, FlushDeadline: model.Duration(time.Second)}, dir, reg, quiet)
	require.NoError(t, err)
	src.SetWriteNotified(fw.WriteNotified())
	t.Cleanup(func() {
		require.NoError(t, fw.Close())
		require.NoError(t, src.Close())
	})

	// A WAL watcher sends only samples newer than its start, and starts in
	// a goroutine: write probe samples until every watcher has read one (it
	// notes its start time before reading), then write newer samples.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		app := src.AppenderV2(context.Background())
		_, err := app.Append(0, labels.FromStrings("__name__", "fwd_probe", "cluster", "eu-1"), 0, time.Now().UnixMilli(), 1, nil, nil, storage.AOptions{})
		require.NoError(c, err)
		require.NoError(c, app.Commit())
		read := recordsRead(c, reg)
		for _, d := range []string{"good", "flaky", "stuck"} {
			assert.Positive(c, read[d], "records read by the watcher of %s", d)
		}
	}, 10*time.Second, 10*time.Millisecond, "every WAL watcher is tailing")
	now := time.Now().UnixMilli() + 1
	const n = 200
	app := src.AppenderV2(context.Background())
	for i := range n {
		_, err := app.Append(0, labels.FromStrings("__name__", "fwd_test", "cluster", "eu-1", "i", fmt.Sprint(i%10)), 0, now+int64(i), float64(i), nil, nil, storage.AOptions{})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())

	require.Eventually(t, func() bool { return count(t, goodDB, "fwd_test") == n }, 20*time.Second, 100*time.Millisecond, "good destination gets everything while others are down or stuck")
	require.Zero(t, count(t, flakyDB, "fwd_test"))
	flakyDown.Store(false)
	require.Eventually(t, func() bool { return count(t, flakyDB, "fwd_test") == n }, 20*time.Second, 100*time.Millisecond, "a destination that was down gets everything after it comes back")
}

func TestForwardConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Destinations: []Destination{{URL: "http://x"}}}, "destinations[0].name"},
		{Config{Destinations: []Destination{{Name: "a", URL: "ftp://x"}}}, "destinations[0] (a).url"},
		{Config{Destinations: []Destination{{Name: "a", URL: "http://x"}, {Name: "a", URL: "http://y"}}}, "duplicate"},
		{Config{Destinations: []Destination{{Name: "a", URL: "http://x", Protocol: "3"}}}, "protocol"},
		{Config{Destinations: []Destination{{Name: "a", URL: "http://x", Queue: QueueConfig{MinShards: 5, MaxShards: 2}}}}, "queue.min_shards"},
	} {
		require.ErrorContains(t, tc.cfg.Validate(), tc.want)
	}
}
