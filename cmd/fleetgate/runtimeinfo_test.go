package main

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/store/metrics"
)

// TestRuntimeInfoIsReal: status/runtimeinfo reports this process, not
// placeholders.
func TestRuntimeInfoIsReal(t *testing.T) {
	a := newTestApp(t, "storage: {retention_size_bytes: 10737418240}\n", "--storage.retention=30d")
	w := a.do(t, http.MethodGet, "/api/v1/status/runtimeinfo", adminToken, "", nil)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			StartTime           time.Time `json:"startTime"`
			CWD                 string    `json:"CWD"`
			Hostname            string    `json:"hostname"`
			ServerTime          time.Time `json:"serverTime"`
			ReloadConfigSuccess bool      `json:"reloadConfigSuccess"`
			LastConfigTime      time.Time `json:"lastConfigTime"`
			CorruptionCount     int64     `json:"corruptionCount"`
			GoroutineCount      int       `json:"goroutineCount"`
			GOMAXPROCS          int       `json:"GOMAXPROCS"`
			GOMEMLIMIT          int64     `json:"GOMEMLIMIT"`
			StorageRetention    string    `json:"storageRetention"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
	d := resp.Data
	require.True(t, d.StartTime.Equal(processStart), "the process's start, not the API's: %s vs %s", d.StartTime, processStart)
	require.True(t, d.LastConfigTime.Equal(processStart), "newApp without serve: the configuration time falls back to the start")
	cwd, err := os.Getwd()
	require.NoError(t, err)
	require.Equal(t, cwd, d.CWD)
	host, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, host, d.Hostname)
	require.WithinDuration(t, time.Now(), d.ServerTime, time.Minute)
	require.True(t, d.ReloadConfigSuccess)
	require.Zero(t, d.CorruptionCount)
	require.Positive(t, d.GoroutineCount)
	require.Equal(t, runtime.GOMAXPROCS(0), d.GOMAXPROCS)
	require.Equal(t, debug.SetMemoryLimit(-1), d.GOMEMLIMIT)
	require.Equal(t, "30d or 10GiB", d.StorageRetention)
}

func TestStorageRetentionText(t *testing.T) {
	for _, tc := range []struct {
		cfg      metrics.Config
		embedded bool
		want     string
	}{
		{metrics.Config{Retention: model.Duration(15 * 24 * time.Hour)}, true, "15d"},
		{metrics.Config{Retention: model.Duration(30 * 24 * time.Hour)}, true, "30d"},
		{metrics.Config{RetentionSize: 512 << 20}, true, "512MiB"},
		{metrics.Config{Retention: model.Duration(time.Hour), RetentionSize: 1 << 30}, true, "1h or 1GiB"},
		{metrics.Config{Retention: model.Duration(time.Hour)}, false, ""},
	} {
		require.Equal(t, tc.want, storageRetention(tc.cfg, tc.embedded))
	}
}

// TestRulesAndAlertsAreHonestlyEmpty: fleetgate evaluates no rules yet, and
// says so the way Prometheus does with no rule files: empty lists, not
// placeholders and not errors.
func TestRulesAndAlertsAreHonestlyEmpty(t *testing.T) {
	a := newTestApp(t, "")
	for path, want := range map[string]string{
		"/api/v1/rules":  `{"status":"success","data":{"groups":[]}}`,
		"/api/v1/alerts": `{"status":"success","data":{"alerts":[]}}`,
	} {
		w := a.do(t, http.MethodGet, path, readerToken, "", nil)
		require.Equal(t, http.StatusOK, w.Code, path)
		require.JSONEq(t, want, w.Body.String(), path)
	}
}
