package fault

import (
	"fmt"
	"strings"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
)

// MatchClass is a set of TCP segment meanings for the match= selector. A
// segment matches when it has any meaning in the set. Some meanings are read
// from the segment alone (syn, syn-ack, data, pure-ack, fin, rst); the others
// need what its connection sent before, which the controller tracks for the
// connections in the scope of rules that ask for them.
type MatchClass uint16

// Segment meanings for the match= selector.
const (
	MatchSYN             MatchClass = 1 << iota // SYN without ACK: a connection attempt
	MatchSYNACK                                 // SYN with ACK: the answer to one
	MatchHandshakeAck                           // the ACK completing the three-way handshake
	MatchData                                   // carries payload (retransmissions too)
	MatchPureAck                                // ACK alone: no payload, SYN, FIN or RST
	MatchFIN                                    // FIN set
	MatchRST                                    // RST set
	MatchRetransmission                         // resends sequence space its flow already sent
	MatchKeepaliveProbe                         // a keepalive probe (RFC 1122 4.2.3.6)
	MatchZeroWindowProbe                        // a probe while the receiver's window is zero
	MatchWindowUpdate                           // a pure ACK that only opens or moves the window
)

// matchStateful are the meanings that need connection tracking.
const matchStateful = MatchHandshakeAck | MatchRetransmission | MatchKeepaliveProbe |
	MatchZeroWindowProbe | MatchWindowUpdate

var matchNames = []named[MatchClass]{
	{"syn", MatchSYN}, {"syn-ack", MatchSYNACK}, {"handshake-ack", MatchHandshakeAck},
	{"data", MatchData}, {"pure-ack", MatchPureAck}, {"fin", MatchFIN}, {"rst", MatchRST},
	{"retransmission", MatchRetransmission}, {"keepalive-probe", MatchKeepaliveProbe},
	{"zero-window-probe", MatchZeroWindowProbe}, {"window-update", MatchWindowUpdate},
}

// String lists the meanings joined by commas, as in the grammar.
func (m MatchClass) String() string { return joinNames(m, matchNames) }

func parseMatch(val string) (MatchClass, error) {
	m, bad := parseNames(val, matchNames)
	if bad != "" {
		return 0, fmt.Errorf("unknown segment class %q; use syn, syn-ack, handshake-ack, data, pure-ack, fin, rst, "+
			"retransmission, keepalive-probe, zero-window-probe or window-update", bad)
	}
	return m, nil
}

// named is one name of a set of classes in the grammar (flags=, match=).
type named[T FlagClass | MatchClass] struct {
	name  string
	class T
}

// joinNames lists the names of the classes in set, in table order, joined
// by commas.
func joinNames[T FlagClass | MatchClass](set T, table []named[T]) string {
	var parts []string
	for _, n := range table {
		if set&n.class != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, ",")
}

// parseNames reads a comma-separated list of names from table into a set;
// bad is the first name not in table.
func parseNames[T FlagClass | MatchClass](val string, table []named[T]) (set T, bad string) {
names:
	for _, name := range strings.Split(val, ",") {
		for _, n := range table {
			if n.name == name {
				set |= n.class
				continue names
			}
		}
		return 0, name
	}
	return set, ""
}

// Meaning returns the meanings of the TCP segment p that need no connection
// state (0 for anything but a parsed TCP segment).
func Meaning(p *packet.Packet) MatchClass {
	if p.Proto != packet.ProtoTCP || p.Version == 0 {
		return 0
	}
	var m MatchClass
	switch p.Flags & (packet.FlagSYN | packet.FlagACK) {
	case packet.FlagSYN:
		m |= MatchSYN
	case packet.FlagSYN | packet.FlagACK:
		m |= MatchSYNACK
	}
	if p.Flags&packet.FlagFIN != 0 {
		m |= MatchFIN
	}
	if p.Flags&packet.FlagRST != 0 {
		m |= MatchRST
	}
	if p.PayloadLen > 0 {
		m |= MatchData
	} else if p.Flags&(packet.FlagSYN|packet.FlagFIN|packet.FlagRST) == 0 && p.Flags&packet.FlagACK != 0 {
		m |= MatchPureAck
	}
	return m
}

// flowMeaning returns the meanings the tracker found for a segment.
func flowMeaning(fi *flow.Info) MatchClass {
	var m MatchClass
	switch fi.Kind {
	case flow.KindRetransmit:
		m |= MatchRetransmission
	case flow.KindKeepaliveProbe:
		m |= MatchKeepaliveProbe
	case flow.KindZeroWindowProbe:
		m |= MatchZeroWindowProbe
	}
	if fi.HandshakeAck {
		m |= MatchHandshakeAck
	}
	if fi.WindowUpdate {
		m |= MatchWindowUpdate
	}
	return m
}
