package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/store/metrics"
)

// storageCommand implements `fleetgate storage drop-future`: the offline
// repair of a TSDB poisoned by far-future samples.
func storageCommand(args []string, stdout, stderr io.Writer) int {
	usage := "usage: fleetgate storage drop-future --storage.path=DIR [--before=TIME] [--block-duration=2h]"
	if len(args) < 1 || args[0] != "drop-future" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("fleetgate storage drop-future", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("storage.path", "", "data directory of the stopped fleetgate (required)")
	before := fs.String("before", "", "cutoff: samples at or after it are moved aside; RFC 3339, Unix seconds, or a duration from now (default: now + "+metrics.DefaultMaxFuture.String()+", ingest.max_future's default)")
	block := fs.String("block-duration", "2h", "range of the blocks written (storage.block_duration)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	now := time.Now()
	cutoff, err := parseCutoff(*before, now)
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate storage drop-future: --before:", err)
		return 2
	}
	bd, err := model.ParseDuration(*block)
	if err != nil || bd <= 0 {
		fmt.Fprintf(stderr, "fleetgate storage drop-future: --block-duration: %q is not a positive duration\n", *block)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	rep, err := metrics.DropFuture(*dir, cutoff, time.Duration(bd), logger)
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate storage drop-future:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
	return 0
}

// maxCutoffSeconds bounds --before as Unix seconds (year 5138), well inside
// what milliseconds in an int64 hold.
const maxCutoffSeconds = 1e11

// parseCutoff reads --before: RFC 3339, Unix seconds, or a duration after now.
func parseCutoff(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return now.Add(metrics.DefaultMaxFuture), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// NaN, ±Inf or a huge number would convert to an arbitrary (for NaN
		// and -Inf: the smallest) time and move every sample aside.
		if math.IsNaN(f) || math.Abs(f) > maxCutoffSeconds {
			return time.Time{}, fmt.Errorf("%q is not a Unix time in seconds", s)
		}
		return time.UnixMilli(int64(f * 1000)), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return now.Add(time.Duration(d)), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time, Unix seconds, nor a duration", s)
}
