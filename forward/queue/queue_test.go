package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDeliveryGoesOnWhenTheCursorCannotBePersisted: a full disk that fails
// the cursor write does not stop delivery (nor fleetgate); after a restart
// the records since the last persisted cursor are delivered again.
func TestDeliveryGoesOnWhenTheCursorCannotBePersisted(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var got []string
	send := func(_ context.Context, rec []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(rec))
		return nil
	}
	q, err := Open("test", dir, Options{MinBackoff: time.Millisecond}, send, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	// The cursor's temporary file cannot be created (as on a full disk).
	require.NoError(t, os.Mkdir(filepath.Join(dir, "cursor.tmp"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cursor.tmp", "x"), nil, 0o644))
	for i := range 3 {
		require.NoError(t, q.Enqueue([]byte(fmt.Sprint(i))))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, q.Close())

	require.NoError(t, os.RemoveAll(filepath.Join(dir, "cursor.tmp")))
	q, err = Open("test", dir, Options{MinBackoff: time.Millisecond}, send, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- q.Run(ctx) }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 6 }, 10*time.Second, 5*time.Millisecond, "at least once")
	// Stop the delivery loop before the test's directory is removed: it
	// persists the cursor as it goes.
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, q.Close())
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"0", "1", "2", "0", "1", "2"}, got)
}
