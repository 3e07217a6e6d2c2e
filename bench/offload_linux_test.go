package bench

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// echoThrough writes n patterned bytes to the peer's echo service from the
// namespace while reading them back, and fails unless every byte returns
// in order.
func echoThrough(t *testing.T, e *env, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	c, err := e.dial(ctx, peerAddr(services.DefaultEchoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(i*7 + i/1000)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		wrote <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("echo differs from byte %d of %d", i, n)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestEchoThroughDevices moves data both ways through each kind of device,
// with rules that drop and delay inbound segments, and checks the bytes and
// how the link carried them: on the offload device the kernel's
// super-packets were cut into segments, went up whole when every segment
// passed and merged again when one was lost, and the peer's segments left
// in fewer writes than packets.
func TestEchoThroughDevices(t *testing.T) {
	tests := []struct {
		name      string
		noOffload bool
		rule      string
		check     func(t *testing.T, e *env)
	}{
		{name: "plain", noOffload: true, check: func(t *testing.T, e *env) {
			if st := e.peer.OffloadStats(); st != (stack.OffloadStats{}) {
				t.Errorf("plain device has offload counters %+v", st)
			}
		}},
		{name: "offload", check: func(t *testing.T, e *env) {
			st := e.peer.OffloadStats()
			if st.SuperPackets == 0 || st.Segments <= st.SuperPackets || st.Whole == 0 {
				t.Errorf("offload counters %+v: want super-packets cut into more segments and delivered whole", st)
			}
			if st.SegmentPackets != 0 {
				t.Errorf("offload counters %+v: with no rule and no observer, want every segment judged from its headers, none built", st)
			}
			if st.OutWrites == 0 || st.OutWrites >= st.OutPackets {
				t.Errorf("offload counters %+v: want the peer's segments written in fewer writes than packets", st)
			}
		}},
		{name: "offload with loss", rule: "loss 2% dir=in port=7 flags=data", check: func(t *testing.T, e *env) {
			if st := e.peer.OffloadStats(); st.Merged == 0 || st.SegmentPackets == 0 || st.SegmentPackets >= st.Segments {
				t.Errorf("offload counters %+v: want batches merged again after losses, segments built only for the batches with a loss", st)
			}
			if e.peer.Fault.Stats().Dropped.Load() == 0 {
				t.Error("the loss rule dropped nothing")
			}
		}},
		{name: "offload with delay", rule: "delay 2ms dir=in port=7", check: func(t *testing.T, e *env) {
			if st := e.peer.OffloadStats(); st.Merged == 0 {
				t.Errorf("offload counters %+v: want batches merged again, their segments having been held", st)
			}
			if e.peer.Fault.Stats().Delayed.Load() == 0 {
				t.Error("the delay rule delayed nothing")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t, Options{NoOffload: tt.noOffload}, envConfig{})
			if tt.rule != "" {
				if _, err := e.peer.Controller().AddString(tt.rule); err != nil {
					t.Fatal(err)
				}
			}
			echoThrough(t, e, 4<<20)
			tt.check(t, e)
		})
	}
}

// TestObserverSeesWireSegments checks what a capture on an offload device
// records: only packets the MTU allows, each with a valid checksum, while
// the kernel sent super-packets.
func TestObserverSeesWireSegments(t *testing.T) {
	var mu sync.Mutex
	var seen, bad, tooBig int
	var inData atomic.Uint64
	obs := fault.ObserverFunc(func(ev *fault.Event) {
		p := ev.Data
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != 6 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if len(p) > 1500 {
			tooBig++
		}
		ip := header.IPv4(p)
		tcp := p[ip.HeaderLength():]
		sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
		if !ip.IsChecksumValid() || checksum.Checksum(tcp, sum) != 0xffff {
			bad++
		}
		if ev.Packet.Dir == packet.In && ev.Packet.PayloadLen > 0 {
			inData.Add(1)
		}
	})
	e := testEnv(t, Options{}, envConfig{observer: obs})
	echoThrough(t, e, 1<<20)
	st := e.peer.OffloadStats()
	mu.Lock()
	defer mu.Unlock()
	if st.SuperPackets == 0 || inData.Load() < st.Segments {
		t.Fatalf("observer saw %d inbound data segments, link cut %d from %d super-packets", inData.Load(), st.Segments, st.SuperPackets)
	}
	if st.SegmentPackets != st.Segments {
		t.Errorf("link built %d of %d segments as packets; an observer needs every one", st.SegmentPackets, st.Segments)
	}
	if tooBig != 0 || bad != 0 {
		t.Fatalf("of %d TCP packets observed, %d exceed the MTU and %d have bad checksums", seen, tooBig, bad)
	}
}
