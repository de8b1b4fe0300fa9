package access

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
)

// BenchmarkScopedSelect: the cost of the injected cluster matcher on a
// Select of one metric over 10 clusters × 1000 series (all, one cluster,
// three clusters).
func BenchmarkScopedSelect(b *testing.B) {
	db, err := tsdb.Open(b.TempDir(), nil, nil, &tsdb.Options{RetentionDuration: int64(1e12)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	app := db.Appender(context.Background())
	for c := range 10 {
		for i := range 1000 {
			ls := labels.FromStrings("__name__", "up", "cluster", fmt.Sprintf("c-%d", c), "instance", fmt.Sprint(i))
			if _, err := app.Append(0, ls, 1000, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
	q := NewQueryable(db)
	m := labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")
	for _, tc := range []struct {
		name  string
		scope Scope
		want  int
	}{
		{"all", All(), 10000},
		{"one cluster", Clusters("c-3"), 1000},
		{"three clusters", Clusters("c-1", "c-5", "c-9"), 3000},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := WithScope(context.Background(), tc.scope)
			for b.Loop() {
				sq, err := q.Querier(0, 2000)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				ss := sq.Select(ctx, false, nil, m)
				for ss.Next() {
					n++
				}
				if ss.Err() != nil || n != tc.want {
					b.Fatalf("%d series, %v", n, ss.Err())
				}
				sq.Close()
			}
		})
	}
}
