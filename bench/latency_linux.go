package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// pingPongWarmup round trips are made before timing starts.
const pingPongWarmup = 200

// pingPong makes n 1-byte round trips on a fresh connection from dial to an
// echo service and returns their durations, sorted.
func pingPong(ctx context.Context, dial func(context.Context) (net.Conn, error), n int) ([]time.Duration, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	b := []byte{'x'}
	rtts := make([]time.Duration, 0, n)
	for i := range pingPongWarmup + n {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, fmt.Errorf("ping: %w", ctxErr(ctx, err))
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, fmt.Errorf("pong: %w", ctxErr(ctx, err))
		}
		if i >= pingPongWarmup {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	return rtts, nil
}
