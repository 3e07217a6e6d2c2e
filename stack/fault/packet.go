package fault

import "github.com/unplug-dev/unplug/stack/packet"

// Direction says which way a packet travels relative to the peer; it is
// packet.Direction, kept under this name for the fault layer's callers.
type Direction = packet.Direction

// Directions. In is towards the peer (from the application), Out is from the
// peer (towards the application). Both is a selector matching either.
const (
	In   = packet.In
	Out  = packet.Out
	Both = packet.Both
)

// TCP flag bits as they appear in the TCP header (packet.Flag*).
const (
	FlagFIN = packet.FlagFIN
	FlagSYN = packet.FlagSYN
	FlagRST = packet.FlagRST
	FlagPSH = packet.FlagPSH
	FlagACK = packet.FlagACK
	FlagURG = packet.FlagURG
	FlagECE = packet.FlagECE
	FlagCWR = packet.FlagCWR
)

// IP protocol numbers the classifier distinguishes (packet.Proto*).
const (
	ProtoICMP   = packet.ProtoICMP
	ProtoTCP    = packet.ProtoTCP
	ProtoUDP    = packet.ProtoUDP
	ProtoICMPv6 = packet.ProtoICMPv6
)
