package load

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestServer(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	ready := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer ready.Close()

	// Ready: WaitReady returns, Stop ends the process.
	s, err := StartServer(sleep, []string{"600"}, io.Discard)
	require.NoError(t, err)
	require.NoError(t, s.WaitReady(context.Background(), ready.URL))
	require.ErrorContains(t, s.Stop(), "signal: terminated")
	require.NotNil(t, s.Cmd.ProcessState, "stopped and reaped")

	// Exits before it is ready: WaitReady says so, and Stop still returns.
	s, err = StartServer(sleep, []string{"0"}, io.Discard)
	require.NoError(t, err)
	err = s.WaitReady(context.Background(), "http://127.0.0.1:1/")
	require.ErrorContains(t, err, "exited before it was ready")
	require.NoError(t, s.Stop(), "sleep 0 exited with status 0")

	// Never ready: the context bounds the wait.
	s, err = StartServer(sleep, []string{"600"}, io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.WaitReady(ctx, "http://127.0.0.1:1/"), context.DeadlineExceeded)
	require.ErrorContains(t, s.Stop(), "signal: terminated")
}
