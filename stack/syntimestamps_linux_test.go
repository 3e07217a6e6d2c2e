package stack

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// synAck is one SYN-ACK the fault layer saw leave the peer.
type synAck struct {
	port    uint16 // the client's
	at      time.Time
	tsval   uint32
	dropped bool
	sumOK   bool // its TCP checksum verifies
}

// synAckLog records the SYN-ACKs the peer sends.
type synAckLog struct {
	mu   sync.Mutex
	seen []synAck
}

func (l *synAckLog) Observe(ev *fault.Event) {
	p := ev.Packet
	if p.Proto != packet.ProtoTCP || p.Dir != packet.Out || p.Flags&packet.FlagSYN == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tsval, ok := wireTSval(ev.Data)
	if !ok {
		return
	}
	l.seen = append(l.seen, synAck{port: p.DstPort, at: ev.Time, tsval: tsval, dropped: ev.Decision.Verdict == fault.Dropped, sumOK: tcpChecksumOK(ev.Data)})
}

// TestRetransmittedSYNACKTimestamp: when the peer's first SYN-ACKs are
// lost, the one it resends carries the current TSval (the first's plus the
// time between them), with a valid checksum, and the peer's round-trip time
// for the connection is measured from the retransmission, as a Linux
// server's is, not from the first SYN-ACK a second earlier (gVisor's
// handshake resends the first's TSval; netstack.FreshSYNTimestamps).
func TestRetransmittedSYNACKTimestamp(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		network, addr string
		lost          int // SYN-ACKs dropped
	}{
		{"tcp4", DefaultAddr4.String(), 1},
		{"tcp6", "[" + DefaultAddr6.String() + "]", 1},
		{"tcp4 two lost", DefaultAddr4.String(), 2},
	} {
		t.Run(tc.network, func(t *testing.T) {
			ns := newHostileNamespace(t)
			log := &synAckLog{}
			peer := startPeer(t, Options{
				Device: ns.Device(), Observer: log, Services: services.Config{Echo: 7},
				Faults: parseSpecs(t, fmt.Sprintf("drop dir=out flags=syn count=%d", tc.lost)),
			})
			ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
			defer cancel()
			network, _, _ := strings.Cut(tc.network, " ")
			c, err := ns.Dial(ctx, network, tc.addr+":7", nil)
			if err != nil {
				t.Fatalf("dial the echo: %v", err)
			}
			defer c.Close()
			local := c.LocalAddr().(*net.TCPAddr)
			// The handshake's RTT sample alone, before any data adds
			// samples of its own: wait for the peer's side to exist.
			var rtt time.Duration
			for found := false; !found; {
				for _, cs := range Conns(peer.Stack) {
					if cs.Remote == local.String() && cs.State == "ESTABLISHED" {
						rtt, found = cs.RTT, true
					}
				}
				if ctx.Err() != nil {
					t.Fatalf("no established peer connection from %v in %+v", local, Conns(peer.Stack))
				}
				time.Sleep(time.Millisecond)
			}
			c.SetDeadline(time.Now().Add(safetyTimeout))
			if _, err := c.Write([]byte{'x'}); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			var seen []synAck
			log.mu.Lock()
			for _, sa := range log.seen {
				if int(sa.port) == local.Port {
					seen = append(seen, sa)
				}
			}
			log.mu.Unlock()
			if len(seen) != tc.lost+1 || !seen[0].dropped || seen[tc.lost].dropped {
				t.Fatalf("SYN-ACKs seen %+v, want %d dropped, then one passed", seen, tc.lost)
			}
			first, last := seen[0], seen[len(seen)-1]
			gap := last.at.Sub(first.at)
			wantMS := uint32(gap.Milliseconds())
			if got := last.tsval - first.tsval; got+1 < wantMS || got > wantMS+1 {
				t.Errorf("the resent SYN-ACK's TSval is the first's + %d ms, want + %d ms (%v between them)", got, wantMS, gap)
			}
			if !last.sumOK {
				t.Error("the resent SYN-ACK's TCP checksum does not verify")
			}
			// Measured from the first SYN-ACK the RTT would exceed the
			// gap between the first and the last; from the last, it is
			// the handshake ACK's round trip.
			t.Logf("%d SYN-ACKs over %v; the peer's RTT %v", len(seen), gap, rtt)
			if rtt >= gap {
				t.Errorf("the peer's RTT is %v, at least the %v between its first and last SYN-ACK: measured from the first", rtt, gap)
			}
		})
	}
}

// wireTSval returns the TSval of the timestamp option of a TCP segment
// in an IPv4 or IPv6 packet (no extension headers).
func wireTSval(b []byte) (uint32, bool) {
	var l4 []byte
	switch header.IPVersion(b) {
	case header.IPv4Version:
		if ip := header.IPv4(b); ip.IsValid(len(b)) {
			l4 = ip.Payload()
		}
	case header.IPv6Version:
		if ip := header.IPv6(b); ip.IsValid(len(b)) {
			l4 = ip.Payload()
		}
	}
	tcp := header.TCP(l4)
	if len(tcp) < header.TCPMinimumSize || int(tcp.DataOffset()) > len(tcp) {
		return 0, false
	}
	opts := tcp.ParsedOptions()
	return opts.TSVal, opts.TS
}
