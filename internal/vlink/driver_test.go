package vlink

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/stack/services"
)

// TestDriver covers Drive's three ways to return: the condition holds, the
// limit passes, or nothing could ever happen.
func TestDriverOutcomes(t *testing.T) {
	p, sv := pollerPair(t)
	d := Driver{Pair: p, Poll: sv.Poll}
	ctx := context.Background()

	c, err := p.Dial(PeerAddr4.String(), services.DefaultEchoPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := d.Drive(ctx, func() bool { return sv.Accepted(services.DefaultEchoPort) == 1 }, Forever); err != nil {
		t.Fatalf("Drive until accepted = %v", err)
	}
	accepted := p.Now()
	if accepted < 10*time.Millisecond {
		t.Errorf("accepted at %v, want at least one round trip of 2×5 ms", accepted)
	}

	// An idle connection arms no timer: waiting for data that nobody sends
	// is idle forever, and a limit ends it with the clock at the limit.
	never := func() bool { return false }
	if err := d.Drive(ctx, never, Forever); !errors.Is(err, ErrIdle) {
		t.Fatalf("Drive on an idle pair = %v, want ErrIdle", err)
	}
	limit := p.Now() + 3*time.Second
	if err := d.Drive(ctx, never, limit); !errors.Is(err, os.ErrDeadlineExceeded) || p.Now() != limit {
		t.Fatalf("Drive to a limit = %v at %v, want os.ErrDeadlineExceeded at %v", err, p.Now(), limit)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	c.Write([]byte("x")) // arms timers, so Drive would go on without ctx
	if err := d.Drive(cancelled, never, Forever); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drive with a cancelled context = %v", err)
	}
}
