// Command rwload sends remote-write 1.0 or 2.0 load: N clusters × M series
// with Kubernetes-like label sets, and reports what was sent, acknowledged,
// and refused by status code, with write latency.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/fleetgate/fleetgate/bench/load"
)

func main() {
	var cfg load.RWConfig
	flag.StringVar(&cfg.URL, "url", "http://127.0.0.1:9201/api/v1/write", "remote-write endpoint")
	flag.IntVar(&cfg.Clusters, "clusters", 4, "number of sending clusters")
	flag.IntVar(&cfg.SeriesPerCluster, "series", 10000, "series per cluster")
	flag.IntVar(&cfg.Version, "rw-version", 1, "remote-write protocol: 1 or 2")
	flag.IntVar(&cfg.SamplesPerSeries, "samples", 1, "samples per series per request (per round)")
	flag.IntVar(&cfg.BatchSeries, "batch", 2000, "series per request")
	flag.IntVar(&cfg.Concurrency, "concurrency", 4, "concurrent requests")
	flag.IntVar(&cfg.Rounds, "rounds", 10, "rounds: each sends every series once")
	flag.DurationVar(&cfg.Step, "step", 15*time.Second, "timestamp distance between samples")
	flag.DurationVar(&cfg.Interval, "interval", 0, "minimum wall time per round (0: as fast as possible)")
	flag.IntVar(&cfg.ChurnPerMinute, "churn", 0, "series per cluster replaced by new ones per minute")
	flag.StringVar(&cfg.TokenPrefix, "token-prefix", "", "bearer token of a cluster is this prefix + its name (cluster-N)")
	flag.DurationVar(&cfg.Timeout, "timeout", time.Minute, "request timeout")
	maxTime := flag.Duration("max-time", 30*time.Minute, "stop after this long")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, *maxTime)
	defer cancel2()
	cfg.OnRound = func(r int, acked int64) { fmt.Fprintf(os.Stderr, "round %d done, %d samples acknowledged\n", r, acked) }
	res, err := load.RunRW(ctx, cfg)
	if res != nil {
		fmt.Println(res)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rwload:", err)
		os.Exit(1)
	}
	if res.AckedSamples != res.SentSamples {
		os.Exit(1)
	}
}
