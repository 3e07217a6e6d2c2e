package stack

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// flowCount is an observer counting the TCP data segments the fault layer
// saw in each direction for one client port.
type flowCount struct {
	mu      sync.Mutex
	port    uint16
	in, out int // data segments
	inBytes int
	delayed int // inbound or outbound data segments delayed by a rule
}

func (f *flowCount) Observe(ev *fault.Event) {
	p := ev.Packet
	if p.Proto != packet.ProtoTCP || p.PayloadLen == 0 || ev.Decision.Verdict == fault.Injected {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case p.Dir == packet.In && p.SrcPort == f.port:
		f.in++
		f.inBytes += p.PayloadLen
	case p.Dir == packet.Out && p.DstPort == f.port:
		f.out++
	default:
		return
	}
	if ev.Decision.Verdict == fault.Delayed {
		f.delayed++
	}
}

func (f *flowCount) setPort(port uint16) {
	f.mu.Lock()
	f.port = port
	f.mu.Unlock()
}

// TestInlineDelivery runs 1-byte round trips against the peer's echo on an
// offload TUN in a private namespace: small packets read while nothing
// waits for the delivering stage are delivered by the reader itself. The
// echoes must be exact, every data segment the kernel sent must have been
// judged and observed by the fault layer (compared with the client
// socket's own count, TCP_INFO data_segs_out), and delay rules must still
// delay every round trip by at least their delay, inbound and outbound;
// with a bulk transfer running beside them (super-packets through the
// delivering stage) the round trips stay exact too.
func TestInlineDelivery(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		rule    string
		pings   int
		minRTT  time.Duration // every round trip at least this long
		inline  bool          // the reader delivered the pings itself
		delayed bool          // the rule delayed every data segment of the flow
		bulk    bool          // a 4 MiB echo runs beside the round trips
	}{
		{name: "no rules", pings: 500, inline: true},
		{name: "delay in", rule: "delay 20ms dir=in", pings: 10, minRTT: 20 * time.Millisecond, inline: true, delayed: true},
		{name: "delay out", rule: "delay 20ms dir=out", pings: 10, minRTT: 20 * time.Millisecond, inline: true, delayed: true},
		{name: "beside bulk", pings: 500, bulk: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newHostileNamespace(t)
			var specs []fault.Spec
			if tc.rule != "" {
				specs = parseSpecs(t, tc.rule)
			}
			obs := &flowCount{}
			peer := startPeer(t, Options{Device: ns.Device(), Faults: specs, Observer: obs, Services: services.Config{Echo: 7}})
			ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
			defer cancel()
			for _, network := range []string{"tcp4", "tcp6"} {
				var bulk chan error
				if tc.bulk {
					bulk = make(chan error, 1)
					go func() {
						bulk <- echoOnce(ctx, ns, network, patterned(4<<20))
					}()
				}
				inline0 := peer.link.stats.inline.Load()
				segsOut, rtts := pingPong(t, ctx, ns, network, obs, tc.pings)
				inline := peer.link.stats.inline.Load() - inline0
				if bulk != nil {
					if err := <-bulk; err != nil {
						t.Fatalf("%s: the bulk echo beside the round trips: %v", network, err)
					}
				}
				for i, d := range rtts {
					if d < tc.minRTT {
						t.Errorf("%s: round trip %d took %v, want at least %v (rule %q)", network, i, d, tc.minRTT, tc.rule)
						break
					}
				}
				obs.mu.Lock()
				in, out, inBytes, delayed := obs.in, obs.out, obs.inBytes, obs.delayed
				obs.mu.Unlock()
				t.Logf("%s: %d round trips, the reader delivered %d packets itself; observed %d data segments in (%d bytes), %d out, %d delayed; kernel sent %d",
					network, tc.pings, inline, in, inBytes, out, delayed, segsOut)
				if in != segsOut || inBytes < tc.pings {
					t.Errorf("%s: the fault layer observed %d data segments (%d bytes) from the client, the kernel sent %d (%d bytes at least)", network, in, inBytes, segsOut, tc.pings)
				}
				if out < tc.pings {
					t.Errorf("%s: the fault layer observed %d data segments from the peer, want at least %d", network, out, tc.pings)
				}
				if tc.inline && inline < uint64(tc.pings) {
					t.Errorf("%s: the reader delivered %d packets itself, want at least one per round trip (%d)", network, inline, tc.pings)
				}
				if tc.delayed && delayed < tc.pings {
					t.Errorf("%s: %d data segments delayed, want every round trip's (%d)", network, delayed, tc.pings)
				}
			}
		})
	}
}

// pingPong makes n 1-byte round trips with distinct bytes on one
// connection to the peer's echo, checking each reply, and returns the
// data segments the client's kernel sent (retransmissions included) and
// the round trips' durations. The connection's port is set in obs before
// the first byte.
func pingPong(t *testing.T, ctx context.Context, ns *tun.Namespace, network string, obs *flowCount, n int) (int, []time.Duration) {
	t.Helper()
	addr := DefaultAddr4.String()
	if network == "tcp6" {
		addr = "[" + DefaultAddr6.String() + "]"
	}
	c, err := ns.Dial(ctx, network, addr+":7", nil)
	if err != nil {
		t.Fatalf("%s: dial the echo: %v", network, err)
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	tc.SetNoDelay(true)
	c.SetDeadline(time.Now().Add(safetyTimeout))
	obs.mu.Lock()
	obs.in, obs.out, obs.inBytes, obs.delayed = 0, 0, 0, 0
	obs.mu.Unlock()
	obs.setPort(uint16(c.LocalAddr().(*net.TCPAddr).Port))
	rtts := make([]time.Duration, 0, n)
	b := make([]byte, 1)
	for i := range n {
		want := byte(i*31 + 1)
		start := time.Now()
		if _, err := c.Write([]byte{want}); err != nil {
			t.Fatalf("%s: ping %d: %v", network, i, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("%s: pong %d: %v (%s)", network, i, err, kernelInfo(c))
		}
		rtts = append(rtts, time.Since(start))
		if b[0] != want {
			t.Fatalf("%s: pong %d is %#x, want %#x", network, i, b[0], want)
		}
	}
	// The last pong was read: the peer received every ping and the
	// observer saw it on the way up.
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
		t.Fatal(fmt.Errorf("TCP_INFO: %v %v", err, ierr))
	}
	return int(info.Data_segs_out), rtts
}
