package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// BenchmarkCommit measures what the guard adds to one commit (the WAL
// write-failure counter check, the note of the acknowledged WAL end, the
// gate): requests of 100 known series with one sample each, committed to
// the guarded Store and to a bare TSDB.
func BenchmarkCommit(b *testing.B) {
	series := make([]labels.Labels, 100)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "bench_total", "series", fmt.Sprint(i))
	}
	run := func(b *testing.B, app storage.AppendableV2) {
		refs := make([]storage.SeriesRef, len(series))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			a := app.AppenderV2(context.Background())
			for j, ls := range series {
				r, err := a.Append(refs[j], ls, 0, int64(i+1)*1000, float64(i), nil, nil, storage.AOptions{})
				if err != nil {
					b.Fatal(err)
				}
				refs[j] = r
			}
			if err := a.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("store=guarded", func(b *testing.B) {
		s, err := Open(Config{Path: b.TempDir()}, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("store=tsdb", func(b *testing.B) {
		db, err := tsdb.Open(b.TempDir(), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db)
	})
}

// BenchmarkFreeBytes is the statfs a commit pays (at most once per
// spaceRecheck) when storage.min_free_bytes is set.
func BenchmarkFreeBytes(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		if _, err := FreeBytes(dir); err != nil {
			b.Fatal(err)
		}
	}
}
