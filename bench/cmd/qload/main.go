// Command qload runs dashboard-style PromQL queries (instant and range over
// 1h/6h/24h) against a Prometheus-compatible API at a given concurrency and
// reports p50/p90/p99 latency and errors.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/bench/load"
)

func main() {
	var cfg load.QConfig
	flag.StringVar(&cfg.BaseURL, "url", "http://127.0.0.1:9201", "base URL of the Prometheus HTTP API")
	flag.IntVar(&cfg.Concurrency, "concurrency", 2, "concurrent queries")
	flag.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to run")
	flag.IntVar(&cfg.MinRuns, "min-runs", 3, "run every query at least this often")
	at := flag.String("time", "", "evaluation time (unix seconds; default now)")
	flag.Parse()
	if *at != "" {
		f, err := strconv.ParseFloat(*at, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "qload: -time:", err)
			os.Exit(2)
		}
		cfg.At = time.UnixMilli(int64(f * 1000))
	}
	cfg.Queries = load.DashboardQueries()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	res, err := load.RunQueries(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "qload:", err)
		os.Exit(1)
	}
	fmt.Print(res)
	if res.Errors > 0 {
		os.Exit(1)
	}
}
