package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/store/metrics"
)

func TestParseCutoff(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", now.Add(10 * time.Minute), false},
		{"2030-01-02T04:00:00Z", time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC), false},
		{"1893466800", time.Unix(1893466800, 0), false},
		{"1h", now.Add(time.Hour), false},
		{"tomorrow", time.Time{}, true},
		{"1893466800.5", time.UnixMilli(1893466800500), false},
		// Would convert to an arbitrary or the smallest time and move every sample aside.
		{"NaN", time.Time{}, true},
		{"-Inf", time.Time{}, true},
		{"+Inf", time.Time{}, true},
		{"1e300", time.Time{}, true},
		{"-1e300", time.Time{}, true},
	} {
		got, err := parseCutoff(tc.in, now)
		if tc.err {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.True(t, tc.want.Equal(got), "%s: %s", tc.in, got)
	}
}

func TestStorageDropFutureCommand(t *testing.T) {
	dir := t.TempDir()
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	a := db.AppenderV2(context.Background())
	ls := labels.FromStrings("__name__", "m", "cluster", "eu-1")
	_, err = a.Append(0, ls, 0, time.Now().UnixMilli(), 1, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	_, err = a.Append(0, ls, 0, time.Now().Add(365*24*time.Hour).UnixMilli(), 2, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	require.NoError(t, a.Commit())

	var out, errb bytes.Buffer
	require.Equal(t, 1, storageCommand([]string{"drop-future", "--storage.path=" + dir}, &out, &errb), "refused while the TSDB is open")
	require.Contains(t, errb.String(), "is fleetgate running")
	require.NoError(t, db.Close())

	require.Equal(t, 2, storageCommand([]string{"drop-future"}, &out, &errb))
	out.Reset()
	require.Equal(t, 0, storageCommand([]string{"drop-future", "--storage.path=" + dir}, &out, &errb), errb.String())
	var rep metrics.DropFutureReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.Equal(t, 1, rep.KeptSamples)
	require.Equal(t, 1, rep.DroppedSamples)
	require.True(t, rep.MovedHead)
}
