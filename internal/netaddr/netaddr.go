// Package netaddr defines unplug's point-to-point network once: the host
// (kernel, client) side and the peer (gVisor netstack) side, in IPv4 from
// the benchmarking range 198.18.0.0/15 (RFC 2544) and in IPv6 from the
// unique local range fd00::/8 (RFC 4193), so that nothing unplug sends can
// reach a real network. The TUN device (package tun), the peer (stack,
// services) and the virtual link (internal/vlink) all read their defaults
// here. The package depends only on the standard library.
package netaddr

import "net/netip"

// The two ends of unplug's network.
var (
	// Host4 and Host6 are the host's side: the TUN device's address on the
	// real path, the client stack's on the virtual one.
	Host4 = netip.MustParseAddr("198.18.0.1")
	Host6 = netip.MustParseAddr("fd00:198:18::1")
	// Peer4 and Peer6 are the peer's addresses, where its services listen.
	Peer4 = netip.MustParseAddr("198.18.0.2")
	Peer6 = netip.MustParseAddr("fd00:198:18::2")
)

// Prefix lengths of the host's addresses on the TUN device.
const (
	Bits4 = 24
	Bits6 = 64
)

// HostPrefix4 returns Host4/24, the TUN device's IPv4 address and route.
func HostPrefix4() netip.Prefix { return netip.PrefixFrom(Host4, Bits4) }

// HostPrefix6 returns Host6/64, the TUN device's IPv6 address and route.
func HostPrefix6() netip.Prefix { return netip.PrefixFrom(Host6, Bits6) }
