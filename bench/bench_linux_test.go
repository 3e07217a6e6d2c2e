package bench

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/stack/services"
)

// Benchmarks of the same code paths `unplug bench` runs, for go test
// -bench (root only; each builds its own namespace). CI runs the bench code
// through TestRunQuick; these are for profiling a single path:
//
//	go test -run '^$' -bench BulkPeer -benchtime 2000x -cpuprofile cpu.out ./bench

func benchBulk(b *testing.B, opts Options, loopback bool) {
	e := testEnv(b, opts, envConfig{})
	dial := func(ctx context.Context) (net.Conn, error) { return e.dial(ctx, peerAddr(services.DefaultDiscardPort)) }
	if loopback {
		l, err := e.listenLoopback()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		go serveDiscard(l)
		dial = func(ctx context.Context) (net.Conn, error) { return e.dial(ctx, l.Addr().String()) }
	}
	b.SetBytes(bulkChunk)
	b.ResetTimer()
	if _, err := bulk(context.Background(), dial, 0, int64(b.N)*bulkChunk); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBulkPeer sends to the peer's discard service over the offload
// device.
func BenchmarkBulkPeer(b *testing.B) { benchBulk(b, Options{}, false) }

// BenchmarkBulkPeerPlain is the same over the plain TUN device.
func BenchmarkBulkPeerPlain(b *testing.B) { benchBulk(b, Options{NoOffload: true}, false) }

// BenchmarkBulkLoopback is the baseline: kernel loopback in the namespace.
func BenchmarkBulkLoopback(b *testing.B) { benchBulk(b, Options{}, true) }

// BenchmarkPingPongPeer makes 1-byte round trips through the peer's echo.
func BenchmarkPingPongPeer(b *testing.B) {
	e := testEnv(b, Options{}, envConfig{})
	dial := func(ctx context.Context) (net.Conn, error) { return e.dial(ctx, peerAddr(services.DefaultEchoPort)) }
	b.ResetTimer()
	rtts, err := pingPong(context.Background(), dial, b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(micros(percentile(rtts, 50)), "p50-µs")
	b.ReportMetric(micros(percentile(rtts, 99)), "p99-µs")
}

// BenchmarkVirtualTimeout runs gVisor's full retransmission timeout in
// virtual time and reports simulated seconds per wall second.
func BenchmarkVirtualTimeout(b *testing.B) {
	var sim time.Duration
	start := time.Now()
	for b.Loop() {
		d, err := virtualTimeoutOnce()
		if err != nil {
			b.Fatal(err)
		}
		sim += d
	}
	b.ReportMetric(sim.Seconds()/time.Since(start).Seconds(), "virtual-s/s")
}
