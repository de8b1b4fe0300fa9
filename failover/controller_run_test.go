package failover

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A controller without any sink must keep running until it is stopped:
// fleetgate's run group ends when any actor returns.
func TestControllerWithoutSinksRunsUntilStopped(t *testing.T) {
	dir := t.TempDir()
	evlog, err := OpenEventLog(filepath.Join(dir, "events"), 100)
	require.NoError(t, err)
	defer evlog.Close()
	outbox, err := OpenOutbox(filepath.Join(dir, "outbox"), time.Millisecond, time.Second, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctrl, err := NewController(ControllerOptions{Engine: NewEngine(Config{}), Log: evlog, Outbox: outbox, Leader: Standalone{}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Run returned before it was stopped: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	require.NoError(t, <-done)
}
