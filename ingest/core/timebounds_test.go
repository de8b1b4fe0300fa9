package core

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each bound refuses with its reason and names itself and the timestamp;
// the edges (exactly max_future ahead, exactly max_age old) are inside.
func TestTimeBounds(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	b := TimeBounds{MaxFuture: 10 * time.Minute, MaxAge: 7 * 24 * time.Hour, MaxAgeKey: "logs_storage.retention"}
	for _, tc := range []struct {
		name   string
		t      time.Time
		reason string // "" = within
		msg    string
	}{
		{"now", now, "", ""},
		{"at max_future", now.Add(10 * time.Minute), "", ""},
		{"past max_future", now.Add(10*time.Minute + time.Nanosecond), ReasonTooFarInFuture,
			"timestamp 2025-06-01T12:10:00.000000001Z is more than ingest.max_future (10m) ahead of now"},
		{"2262", time.Unix(0, math.MaxInt64), ReasonTooFarInFuture, "timestamp 2262-04-11T23:47:16.854775807Z is more than ingest.max_future (10m)"},
		{"at max_age", now.Add(-7 * 24 * time.Hour), "", ""},
		{"past max_age", now.Add(-7*24*time.Hour - time.Second), ReasonTooOld,
			"timestamp 2025-05-25T11:59:59Z is older than logs_storage.retention (1w)"},
		{"epoch", time.Unix(0, 0), ReasonTooOld, "timestamp 1970-01-01T00:00:00Z (0 ns) is not after 1970-01-01"},
		{"negative", time.Unix(0, -5), ReasonTooOld, "(-5 ns) is not after 1970-01-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.Check(tc.t, now)
			if tc.reason == "" {
				require.Nil(t, err)
				return
			}
			require.NotNil(t, err)
			require.Equal(t, http.StatusBadRequest, err.Status)
			require.Equal(t, tc.reason, err.Reason)
			require.Contains(t, err.Msg, tc.msg)
		})
	}

	// Without MaxAge only 1970 is too old; the metrics path's bound in ms.
	b = TimeBounds{MaxFuture: time.Minute}
	require.Nil(t, b.Check(now.Add(-20*365*24*time.Hour), now))
	require.Equal(t, now.Add(time.Minute).UnixMilli(), b.LatestMillis(now))
	require.Equal(t, "ingest.max_future (1m)", b.FutureBound())
}
