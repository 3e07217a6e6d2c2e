// Package packet holds the vocabulary every layer of unplug's data path
// shares about an IP packet: which way it travels relative to the peer, the
// TCP flag bits, the IP protocol numbers, and the parsed view of a packet
// (Packet, filled by Parse without allocating). It depends on nothing but
// the standard library, so the fault layer, its flow tracker and the capture
// can all use it without importing one another; each of them used to define
// these values on its own.
package packet

// Direction says which way a packet travels relative to the peer.
type Direction uint8

// Directions. In is towards the peer (from the application), Out is from the
// peer (towards the application). Both is a selector matching either; the
// zero Direction selects nothing, so rule constructors normalise it to Both.
const (
	In   Direction = 1
	Out  Direction = 2
	Both           = In | Out
)

// String returns "in", "out", "both" or "none" (the zero Direction).
func (d Direction) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	case Both:
		return "both"
	}
	return "none"
}

// Reverse returns the other direction: Out for In, In for Out; Both and the
// zero Direction are their own reverse.
func (d Direction) Reverse() Direction {
	switch d {
	case In:
		return Out
	case Out:
		return In
	}
	return d
}

// TCP flag bits as they appear in byte 13 of the TCP header.
const (
	FlagFIN uint8 = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
)

// IP protocol numbers the classifier distinguishes.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// flagLetters are the TCP flags in tcpdump's order and notation
// (print-tcp.c's tcp_flag_values): F, S, R, P, then "." for ACK, then U, E
// and W.
var flagLetters = [...]struct {
	bit    uint8
	letter byte
}{
	{FlagFIN, 'F'}, {FlagSYN, 'S'}, {FlagRST, 'R'}, {FlagPSH, 'P'},
	{FlagACK, '.'}, {FlagURG, 'U'}, {FlagECE, 'E'}, {FlagCWR, 'W'},
}

// AppendFlags appends the TCP flags f as tcpdump writes them between its
// brackets: "S." for a SYN-ACK, "FP." for FIN, PSH and ACK, nothing for no
// flag.
func AppendFlags(b []byte, f uint8) []byte {
	for _, fl := range flagLetters {
		if f&fl.bit != 0 {
			b = append(b, fl.letter)
		}
	}
	return b
}

// FlagString returns AppendFlags' letters as a string.
func FlagString(f uint8) string { return string(AppendFlags(nil, f)) }
