package stack

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// FuzzPeerInbound feeds arbitrary bytes into the peer's device, as a TUN
// would deliver them: the fault layer's classifier (with rules that look
// at ports, flags and direction, and a delay rule that re-injects packets
// later) and gVisor's receive path must survive every input. After each
// input a ping proves the peer still answers, and the fault layer must have
// counted the input.
func FuzzPeerInbound(f *testing.F) {
	syn := tcp4(40000, 80, 1, header.TCPFlagSyn, nil)
	badIHL := append([]byte(nil), syn...)
	badIHL[0] = 0x4f
	shortIHL := append([]byte(nil), syn...)
	shortIHL[0] = 0x42
	longTotal := append([]byte(nil), syn...)
	longTotal[2], longTotal[3] = 0xff, 0xff
	v6frag := ipv6Packet(uint8(header.IPv6FragmentExtHdrIdentifier), []byte{uint8(header.TCPProtocolNumber), 0, 0, 8, 0, 0, 0, 1, 0, 7, 0, 80})
	for _, seed := range [][]byte{
		syn,
		tcp4(40000, 7, 1, header.TCPFlagAck|header.TCPFlagPsh, []byte("data")),
		tcp4(40000, 9, 1, header.TCPFlagRst, nil),
		syn[:10],                     // truncated IPv4 header
		syn[:header.IPv4MinimumSize], // IPv4 header, no TCP header
		syn[:header.IPv4MinimumSize+8],
		badIHL,
		shortIHL,
		longTotal,
		udp4(40000, 9, []byte("x")),
		echo4(1, 1),
		fragment4(),
		tcp6WithExtensions(80),
		tcp6WithExtensions(7)[:50], // cut inside the extension headers
		v6frag,
		ipv6Packet(59, nil), // no next header
		{0x45},
		{0x60},
		{0x00, 0x01, 0x02},
	} {
		f.Add(seed)
	}

	h := newInboundHarness(f)
	f.Fuzz(h.check)
}

// inboundHarness is a peer on a memory link with rules that look at ports,
// flags and direction, fed by hand-made packets.
type inboundHarness struct {
	peer    *Peer
	dev     *tun.MemoryDevice // the host's end
	replies chan []byte
	probe   uint16
}

func newInboundHarness(tb testing.TB) *inboundHarness {
	a, b := tun.NewMemoryPair(1500)
	specs := parseSpecs(tb, "drop port=80 flags=syn,rst dir=in", "loss 50% port=9 flags=data", "delay 1ms dir=in port=7")
	peer, err := New(context.Background(), Options{Device: a, Seed: 1, Faults: specs, Services: services.Config{HTTP: 80, Echo: 7, Discard: 9}})
	if err != nil {
		tb.Fatal(err)
	}
	h := &inboundHarness{peer: peer, dev: b, replies: make(chan []byte, 64)}
	tb.Cleanup(func() {
		b.Close()
		peer.Close()
		for range h.replies { // until the reader has stopped
		}
	})
	// Echo replies are rate limited like other ICMP; the probe needs one
	// per input.
	peer.Stack.SetICMPLimit(rate.Inf)
	go func() {
		defer close(h.replies)
		for {
			buf := make([]byte, 1500)
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			h.replies <- buf[:n]
		}
	}()
	return h
}

// check writes pkt into the peer's device, then pings the peer and waits
// for the answer.
func (h *inboundHarness) check(t *testing.T, pkt []byte) {
	if len(pkt) > 1500 {
		pkt = pkt[:1500] // the device carries at most its MTU
	}
	before := h.peer.Fault.Stats().In.Load()
	h.dev.Write(pkt)
	h.probe++
	h.dev.Write(echo4(0xbeef, h.probe))
	timeout := time.NewTimer(safetyTimeout)
	defer timeout.Stop()
	for answered := false; !answered; {
		select {
		case p, ok := <-h.replies:
			if !ok {
				t.Fatal("the device closed")
			}
			answered = isEchoReply4(p, 0xbeef, h.probe)
		case <-timeout.C:
			t.Fatalf("the peer stopped answering pings after % x", pkt)
		}
	}
	want := before + 1 // the ping
	if len(pkt) > 0 && (header.IPVersion(pkt) == header.IPv4Version || header.IPVersion(pkt) == header.IPv6Version) {
		want++ // the input, which the link hands to the fault layer
	}
	if got := h.peer.Fault.Stats().In.Load(); got < want {
		t.Fatalf("the fault layer counted %d packets, want %d", got-before, want-before)
	}
}
