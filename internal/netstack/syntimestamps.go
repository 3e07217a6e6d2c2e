package netstack

import (
	"encoding/binary"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// FreshSYNTimestamps wraps the link a gVisor stack's NIC writes to so that
// every SYN and SYN-ACK it retransmits carries the current TCP timestamp,
// as Linux's do (RFC 7323 §3.2: TSval is the clock when the segment is
// sent).
//
// gVisor's handshake (pinned version, tcp/connect.go
// retransmitHandlerLocked) resends the options it built for the first SYN
// or SYN-ACK, TSval included, and then takes the round trip from the
// handshake ACK's TSecr only. A client that never saw the first SYN-ACK
// echoes a retransmission's TSval, so gVisor measured the round trip from
// the first SYN-ACK instead: one lost SYN-ACK (1 s) made the connection's
// RTT 1 s and its first RTO 3 s, three (7 s) an RTO of 21 s, where a Linux
// server measures the real round trip. Here a retransmission's TSval
// becomes what gVisor's clock says now (gVisor's TSval is the stack
// clock's milliseconds plus a per-connection offset, which the first
// transmission reveals), and its TCP checksum is recomputed when it was a
// full one.
//
// A client that did see the first SYN-ACK (its ACK was lost instead)
// echoes that first TSval in the ACKs it sends to later ones, which are
// duplicates to it; a Linux server then measures from its first SYN-ACK
// too, and so does the peer.
func FreshSYNTimestamps(lower stack.LinkEndpoint, clock tcpip.Clock) stack.LinkEndpoint {
	return &synTimestamps{LinkEndpoint: lower, clock: clock, sent: make(map[synKey]synSent)}
}

// synKeep is how long a SYN's first transmission is remembered: longer
// than gVisor's handshake retransmits (its SYN retries, 1+2+…+64 s).
const synKeep = 3 * time.Minute

// synSweepMin is the table size at which old entries are first swept.
const synSweepMin = 1024

type synTimestamps struct {
	stack.LinkEndpoint
	clock tcpip.Clock

	mu      sync.Mutex
	sent    map[synKey]synSent
	sweepAt int
}

// synKey names one handshake's SYN or SYN-ACK: the connection's addresses
// and ports, the initial sequence number and whether it is a SYN-ACK.
type synKey struct {
	src, dst     tcpip.Address
	sport, dport uint16
	iss          uint32
	synack       bool
}

// synSent is the first transmission's TSval and stack-clock time.
type synSent struct {
	tsval uint32
	at    tcpip.MonotonicTime
}

// WritePackets implements stack.LinkWriter: retransmitted SYNs and
// SYN-ACKs get a fresh TSval, then everything goes to the lower link.
func (e *synTimestamps) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
			continue
		}
		tcp := header.TCP(pkt.TransportHeader().Slice())
		if len(tcp) < header.TCPMinimumSize || tcp.Flags()&header.TCPFlagSyn == 0 {
			continue
		}
		e.refresh(pkt, tcp)
	}
	return e.LinkEndpoint.WritePackets(pkts)
}

// refresh records a SYN's first transmission, or rewrites a
// retransmission's TSval.
func (e *synTimestamps) refresh(pkt *stack.PacketBuffer, tcp header.TCP) {
	off := tsvalOffset(tcp)
	if off < 0 {
		return
	}
	k := synKey{sport: tcp.SourcePort(), dport: tcp.DestinationPort(), iss: tcp.SequenceNumber(), synack: tcp.Flags()&header.TCPFlagAck != 0}
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(pkt.NetworkHeader().Slice())
		if len(ip) < header.IPv4MinimumSize {
			return
		}
		k.src, k.dst = ip.SourceAddress(), ip.DestinationAddress()
	case header.IPv6ProtocolNumber:
		ip := header.IPv6(pkt.NetworkHeader().Slice())
		if len(ip) < header.IPv6MinimumSize {
			return
		}
		k.src, k.dst = ip.SourceAddress(), ip.DestinationAddress()
	default:
		return
	}
	tsval := binary.BigEndian.Uint32(tcp[off:])
	now := e.clock.NowMonotonic()
	e.mu.Lock()
	first, ok := e.sent[k]
	if !ok || first.tsval != tsval {
		// A first transmission (or a gVisor that already refreshes it).
		e.sent[k] = synSent{tsval: tsval, at: now}
		e.sweepLocked(now)
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	fresh := tsval + uint32(msSinceZero(now)-msSinceZero(first.at))
	if fresh == tsval {
		return
	}
	// tsvalOffset checked that the options end within tcp, so its
	// checksum helpers (which cover tcp[:DataOffset]) apply.
	payloadSum, payloadLen := pkt.Data().Checksum(), uint16(pkt.Data().Size())
	full := !pkt.GSOOptions.NeedsCsum && tcp.IsChecksumValid(k.src, k.dst, payloadSum, payloadLen)
	binary.BigEndian.PutUint32(tcp[off:], fresh)
	if full {
		// As gVisor's TCP computes it (tcp/connect.go, sendTCP).
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, k.src, k.dst, uint16(tcp.DataOffset())+payloadLen)
		tcp.SetChecksum(0)
		tcp.SetChecksum(^tcp.CalculateChecksum(checksum.Combine(xsum, payloadSum)))
	}
}

// msSinceZero is gVisor's TSval clock: whole milliseconds of the stack's
// monotonic clock, truncated to 32 bits as gVisor truncates them.
func msSinceZero(t tcpip.MonotonicTime) uint32 {
	return uint32(t.Sub(tcpip.MonotonicTime{}).Milliseconds())
}

// sweepLocked forgets first transmissions older than synKeep once the
// table has grown past its last size after a sweep.
func (e *synTimestamps) sweepLocked(now tcpip.MonotonicTime) {
	if len(e.sent) < max(e.sweepAt, synSweepMin) {
		return
	}
	for k, s := range e.sent {
		if now.Sub(s.at) > synKeep {
			delete(e.sent, k)
		}
	}
	e.sweepAt = 2 * len(e.sent)
}

// tsvalOffset returns where the timestamp option's TSval sits in tcp, or
// -1 when the segment has none.
func tsvalOffset(tcp header.TCP) int {
	end := int(tcp.DataOffset())
	if end > len(tcp) || end < header.TCPMinimumSize {
		return -1
	}
	for i := header.TCPMinimumSize; i < end; {
		switch tcp[i] {
		case header.TCPOptionEOL:
			return -1
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= end || tcp[i+1] < 2 || i+int(tcp[i+1]) > end {
			return -1
		}
		if tcp[i] == header.TCPOptionTS && tcp[i+1] == header.TCPOptionTSLength {
			return i + 2
		}
		i += int(tcp[i+1])
	}
	return -1
}

// GSOMaxSize forwards the lower link's, so that wrapping it keeps gVisor
// sending super-packets when the lower link takes them.
func (e *synTimestamps) GSOMaxSize() uint32 {
	if g, ok := e.LinkEndpoint.(stack.GSOEndpoint); ok {
		return g.GSOMaxSize()
	}
	return 0
}

// SupportedGSO forwards the lower link's (see GSOMaxSize).
func (e *synTimestamps) SupportedGSO() stack.SupportedGSO {
	if g, ok := e.LinkEndpoint.(stack.GSOEndpoint); ok {
		return g.SupportedGSO()
	}
	return stack.GSONotSupported
}
