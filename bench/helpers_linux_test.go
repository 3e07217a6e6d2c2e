package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

// safetyTimeout bounds waits that should end at once; never asserted on.
const safetyTimeout = 60 * time.Second

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
}

// testEnv builds an environment the test's cleanup closes.
func testEnv(t testing.TB, opts Options, ec envConfig) *env {
	t.Helper()
	requireRoot(t)
	// The peer's services live as long as this context: the cleanup's
	// close ends them.
	e, err := newEnv(context.Background(), opts.withDefaults(), ec)
	if err != nil {
		t.Fatalf("newEnv: %v", err)
	}
	t.Cleanup(func() { e.close() })
	return e
}
