package main

import (
	"time"

	"github.com/alecthomas/units"

	"github.com/fleetgate/fleetgate/store/metrics"
)

// What status/runtimeinfo reports: when the process started and when
// serve loaded the configuration (fleetgate has no reload; zero when newApp
// runs without serve, as in tests: the API then reports its own start).
var (
	processStart = time.Now()
	configLoaded time.Time
)

// storageRetention is the retention as Prometheus's runtimeinfo writes it:
// "15d", "10GiB" or "15d or 10GiB"; empty without an embedded TSDB
// (forward-only mode keeps only a WAL until it is forwarded).
func storageRetention(c metrics.Config, embedded bool) string {
	if !embedded {
		return ""
	}
	var s string
	if c.Retention != 0 {
		s = c.Retention.String()
	}
	if c.RetentionSize != 0 {
		if s != "" {
			s += " or "
		}
		s += units.Base2Bytes(c.RetentionSize).String()
	}
	return s
}
