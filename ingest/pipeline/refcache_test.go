package pipeline

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

func newTestPipeline(t testing.TB, clusters ...fleet.ClusterConfig) (*Pipeline, *tsdb.DB, *fleet.Registry) {
	t.Helper()
	opts := tsdb.DefaultOptions()
	db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, opts, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	reg, err := fleet.NewRegistry(fleet.Config{Clusters: clusters})
	require.NoError(t, err)
	p, err := New(Config{}, reg, db, nil, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return p, db, reg
}

func appendOne(t testing.TB, p *Pipeline, c *fleet.Cluster, ls labels.Labels, ts int64, v float64) error {
	t.Helper()
	b := p.Begin(context.Background(), c)
	s := &Series{Labels: ls, Samples: []Sample{{T: ts, V: v}}}
	if err := b.Add(s); err != nil {
		return err
	}
	_, err := b.Commit()
	return err
}

func selectAll(t testing.TB, db *tsdb.DB) map[string][]float64 {
	t.Helper()
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	out := map[string][]float64{}
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			_, v := it.At()
			out[ss.At().Labels().String()] = append(out[ss.At().Labels().String()], v)
		}
	}
	require.NoError(t, ss.Err())
	return out
}

func TestRefCacheHitAndStaleRef(t *testing.T) {
	t.Setenv("TOKEN_A", "a-token")
	p, db, reg := newTestPipeline(t, fleet.ClusterConfig{Name: "a", Region: "eu", Credentials: fleet.Credentials{BearerTokenEnv: "TOKEN_A"}})
	c := reg.Get("a")
	require.NotNil(t, c)
	sent := labels.FromStrings("__name__", "up", "job", "node")
	stamped := `{__name__="up", cluster="a", job="node", region="eu"}`

	require.NoError(t, appendOne(t, p, c, sent, 1000, 1))
	key := p.refs.key(stampKey(c.StampLabels(), false), sent.Bytes(nil))
	ref := p.refs.get(&key)
	require.NotZero(t, ref, "an appended series is cached")

	require.NoError(t, appendOne(t, p, c, sent, 2000, 2), "a hit appends by reference")
	require.Equal(t, map[string][]float64{stamped: {1, 2}}, selectAll(t, db))

	// Garbage-collect the series out of the head: its reference goes stale.
	require.NoError(t, db.Head().Truncate(1_000_000))
	require.Equal(t, ref, p.refs.get(&key), "the cache still holds the stale reference")
	require.NoError(t, appendOne(t, p, c, sent, 2_000_000, 3), "a stale reference falls back to labels")
	require.NotEqual(t, ref, p.refs.get(&key), "the new reference is cached")
	require.Equal(t, map[string][]float64{stamped: {3}}, selectAll(t, db), "appended under the stamped labels, not empty or unstamped ones")
}

func TestRefCacheKeepsIdentityChecks(t *testing.T) {
	t.Setenv("TOKEN_A", "a-token")
	t.Setenv("TOKEN_B", "b-token")
	p, db, reg := newTestPipeline(t,
		fleet.ClusterConfig{Name: "a", Credentials: fleet.Credentials{BearerTokenEnv: "TOKEN_A"}},
		fleet.ClusterConfig{Name: "b", Credentials: fleet.Credentials{BearerTokenEnv: "TOKEN_B"}})
	claimsA := labels.FromStrings("__name__", "up", "cluster", "a")
	require.NoError(t, appendOne(t, p, reg.Get("a"), claimsA, 1000, 1))
	require.NoError(t, appendOne(t, p, reg.Get("a"), claimsA, 2000, 1))
	// The same labels from cluster b are a conflict, cached or not.
	err := appendOne(t, p, reg.Get("b"), claimsA, 3000, 1)
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err))
	require.Contains(t, err.Error(), `claims cluster "a"`)
	require.Len(t, selectAll(t, db)[`{__name__="up", cluster="a"}`], 2)
}

func TestRefCacheOutOfOrderOnHitIsReported(t *testing.T) {
	p, _, reg := newTestPipeline(t)
	c := reg.Dev("dev")
	ls := labels.FromStrings("__name__", "up", "cluster", "dev")
	require.NoError(t, appendOne(t, p, c, ls, 2000, 1))
	err := appendOne(t, p, c, ls, 1000, 1)
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, core.ErrorStatus(err))
	require.Contains(t, err.Error(), `cluster="dev"`, "the message names the stamped series")
	require.Contains(t, err.Error(), storage.ErrOutOfOrderSample.Error())
}

func TestRefTableGrowDeleteEvict(t *testing.T) {
	rc := newRefCache(256 * 128 * refEntryBytes) // 128 entries per shard at most
	key := func(i int) refKey { return rc.key("s", []byte{byte(i), byte(i >> 8), byte(i >> 16)}) }
	const n = 20000
	for i := 1; i <= n; i++ {
		k := key(i)
		rc.set(&k, storage.SeriesRef(i))
	}
	// Shards that overflowed were cleared: whatever is found must be right.
	found := 0
	for i := 1; i <= n; i++ {
		k := key(i)
		if r := rc.get(&k); r != 0 {
			require.Equal(t, storage.SeriesRef(i), r)
			found++
		}
	}
	require.Positive(t, found)
	// Deleting keeps every other entry reachable.
	rc = newRefCache(128 << 20)
	for i := 1; i <= n; i++ {
		k := key(i)
		rc.set(&k, storage.SeriesRef(i))
	}
	for i := 1; i <= n; i += 3 {
		k := key(i)
		rc.del(&k)
	}
	for i := 1; i <= n; i++ {
		k := key(i)
		want := storage.SeriesRef(i)
		if i%3 == 1 {
			want = 0
		}
		require.Equal(t, want, rc.get(&k), "key %d", i)
	}
}
