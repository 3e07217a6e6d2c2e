package bench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// serveStart times, starts times, how long unplug takes from being started
// to accepting a connection on the peer's echo port, and returns the
// median. With opts.ServeCommand it runs `unplug serve` as a program in a
// fresh namespace each time; without, it times the same parts in this
// process (a namespace with its TUN, the peer, its services).
func serveStart(ctx context.Context, opts Options) (time.Duration, error) {
	var times []time.Duration
	for range opts.Starts {
		var d time.Duration
		var err error
		if opts.ServeCommand != nil {
			d, err = serveStartCommand(ctx, opts)
		} else {
			d, err = serveStartInProcess(ctx, opts)
		}
		if err != nil {
			return 0, err
		}
		times = append(times, d)
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

// serveStartCommand starts opts.ServeCommand inside a namespace whose own
// TUN has no addresses (serve creates unplug0 with them) and dials the
// echo port from there until the peer answers.
func serveStartCommand(ctx context.Context, opts Options) (time.Duration, error) {
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{
		TUN: tun.Config{Name: "benchidle0", MTU: tun.DefaultMTU},
	})
	if err != nil {
		return 0, fmt.Errorf("serve start: %w", err)
	}
	defer ns.Close()
	dir, err := os.MkdirTemp("", "unplug-bench-")
	if err != nil {
		return 0, fmt.Errorf("serve start: %w", err)
	}
	defer os.RemoveAll(dir)
	argv := append(slices.Clone(opts.ServeCommand),
		"--tun", tun.DefaultName, "--mtu", fmt.Sprint(opts.MTU), "--control", filepath.Join(dir, "control.sock"))
	runCtx, stop := context.WithCancel(ctx)
	exited := make(chan error, 1)
	var out limitedBuffer
	start := time.Now()
	go func() {
		code, err := ns.Run(runCtx, nil, &out, &out, argv)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit status %d", code)
		}
		exited <- err
	}()
	defer func() {
		stop()
		<-exited
	}()
	addr := netip.AddrPortFrom(stack.DefaultAddr4, services.DefaultEchoPort).String()
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := ns.Dial(dctx, "tcp4", addr, nil)
		cancel()
		if err == nil {
			d := time.Since(start)
			c.Close()
			return d, nil
		}
		select {
		case err := <-exited:
			exited <- err
			return 0, fmt.Errorf("serve start: %s exited before accepting (%v): %s", argv[0], err, out.String())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Since(start) > 30*time.Second {
			return 0, fmt.Errorf("serve start: no answer on %s after 30 s: %s", addr, out.String())
		}
	}
}

// serveStartInProcess times a namespace with its TUN, the peer and its
// services, up to the first accepted connection.
func serveStartInProcess(ctx context.Context, opts Options) (time.Duration, error) {
	start := time.Now()
	e, err := newEnv(ctx, opts, envConfig{})
	if err != nil {
		return 0, err
	}
	defer e.close()
	c, err := e.dial(ctx, peerAddr(services.DefaultEchoPort))
	if err != nil {
		return 0, fmt.Errorf("serve start: %w", err)
	}
	d := time.Since(start)
	c.Close()
	return d, nil
}

// limitedBuffer keeps the first 4 KiB written to it, for error messages.
type limitedBuffer struct {
	mu sync.Mutex
	b  []byte
}

// Write implements io.Writer; it never fails.
func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

var _ io.Writer = (*limitedBuffer)(nil)
