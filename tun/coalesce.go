package tun

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// seg is what the coalescer reads of a packet: bytes holding at least its
// IP and TCP headers (the whole packet, or the first of its slices), its
// total length, and whether it may be merged at all.
type seg struct {
	head  []byte
	size  int
	merge bool
}

// tcpHeaders locates the headers of a packet the coalescer may merge: IPv4
// without options or fragmentation, or IPv6 without extension headers,
// carrying TCP with an ACK and payload and no flags other than ACK and
// PSH, the headers within p. size is the whole packet's length (p may hold
// only its first bytes). ok is false for anything else.
func tcpHeaders(p []byte, size int) (ipLen, hdrLen int, ok bool) {
	if len(p) < 40 {
		return 0, 0, false
	}
	switch p[0] >> 4 {
	case 4:
		if p[0]&0xf != 5 || p[9] != ipProtoTCP || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 ||
			int(binary.BigEndian.Uint16(p[2:])) != size {
			return 0, 0, false
		}
		ipLen = 20
	case 6:
		if len(p) < 60 || p[6] != ipProtoTCP || int(binary.BigEndian.Uint16(p[4:]))+40 != size {
			return 0, 0, false
		}
		ipLen = 40
	default:
		return 0, 0, false
	}
	hdrLen = ipLen + int(p[ipLen+12]>>4)*4
	if hdrLen < ipLen+20 || hdrLen > len(p) || hdrLen >= size || p[ipLen+13]&^tcpPSH != tcpACK {
		return 0, 0, false
	}
	return ipLen, hdrLen, true
}

// coalescable returns how many packets from the start of pkts form one
// super-packet: consecutive segments of one flow with identical headers
// apart from lengths, IPv4 id, sequence number and checksums, every
// segment but the last exactly as long as the first and without PSH, in
// sequence, 64 KiB at most. It returns 1 when the first packet cannot be
// merged with the next.
func coalescable(pkts [][]byte) int {
	var buf [64]seg
	return coalescableSegs(wholeSegs(buf[:0], pkts))
}

// coalescableSegs is coalescable over segs; a segment that may not be
// merged stays alone.
func coalescableSegs(segs []seg) int {
	first := segs[0]
	if !first.merge {
		return 1
	}
	ipLen, hdrLen, ok := tcpHeaders(first.head, first.size)
	if !ok || first.head[ipLen+13]&tcpPSH != 0 {
		return 1
	}
	mss := first.size - hdrLen
	total := first.size
	next := binary.BigEndian.Uint32(first.head[ipLen+4:]) + uint32(mss)
	n := 1
	for ; n < len(segs); n++ {
		p := segs[n]
		if !p.merge {
			break
		}
		pipLen, phdrLen, ok := tcpHeaders(p.head, p.size)
		size := p.size - phdrLen
		if !ok || pipLen != ipLen || phdrLen != hdrLen || size > mss || total+size > MaxOffloadSize ||
			binary.BigEndian.Uint32(p.head[ipLen+4:]) != next || !sameFlow(first.head, p.head, ipLen, hdrLen) {
			break
		}
		total += size
		next += uint32(size)
		if size < mss || p.head[ipLen+13]&tcpPSH != 0 {
			n++ // a short or pushed segment ends the run
			break
		}
	}
	return n
}

// sameFlow compares the header bytes that must be equal for a and b to be
// merged: everything except length, id, checksums and sequence number.
func sameFlow(a, b []byte, ipLen, hdrLen int) bool {
	if ipLen == 20 {
		// version..TOS, flags/fragment, TTL, protocol, addresses
		if a[0] != b[0] || a[1] != b[1] || !bytes.Equal(a[6:10], b[6:10]) || !bytes.Equal(a[12:20], b[12:20]) {
			return false
		}
	} else if !bytes.Equal(a[0:4], b[0:4]) || !bytes.Equal(a[6:40], b[6:40]) {
		return false
	}
	ta, tb := a[ipLen:hdrLen], b[ipLen:hdrLen]
	// ports; ack, data offset; window; urgent pointer and options
	return bytes.Equal(ta[0:4], tb[0:4]) && bytes.Equal(ta[8:13], tb[8:13]) &&
		bytes.Equal(ta[14:16], tb[14:16]) && bytes.Equal(ta[18:], tb[18:])
}

// mergeHeader writes into dst the headers of the super-packet made of
// pkts (a run coalescable accepted) and returns them with the GSO header
// that describes it: total lengths, the last segment's flags, a fresh IPv4
// header checksum, and a partial TCP checksum (pseudo-header only) for the
// kernel to finish.
func mergeHeader(dst []byte, pkts [][]byte) ([]byte, GSO) {
	var buf [64]seg
	return mergeSegs(dst, wholeSegs(buf[:0], pkts))
}

// wholeSegs appends to dst the coalescer's view of whole packets.
func wholeSegs(dst []seg, pkts [][]byte) []seg {
	for _, p := range pkts {
		dst = append(dst, seg{head: p, size: len(p), merge: true})
	}
	return dst
}

// mergeSegs is mergeHeader over segs.
func mergeSegs(dst []byte, segs []seg) ([]byte, GSO) {
	first := segs[0].head
	ipLen, hdrLen, _ := tcpHeaders(first, segs[0].size)
	total := hdrLen
	for _, p := range segs {
		total += p.size - hdrLen
	}
	hdr := append(dst[:0], first[:hdrLen]...)
	last := segs[len(segs)-1].head
	hdr[ipLen+13] = last[ipLen+13]
	var addrSum uint16
	g := GSO{Size: uint16(segs[0].size - hdrLen), NeedsCsum: true, CsumStart: uint16(ipLen), CsumOffset: tcpCsumOffset}
	if ipLen == 20 {
		g.Type = GSOTCPv4
		binary.BigEndian.PutUint16(hdr[2:], uint16(total))
		hdr[10], hdr[11] = 0, 0
		binary.BigEndian.PutUint16(hdr[10:], ^checksum.Checksum(hdr[:20], 0))
		addrSum = checksum.Checksum(hdr[12:20], 0)
	} else {
		g.Type = GSOTCPv6
		binary.BigEndian.PutUint16(hdr[4:], uint16(total-40))
		addrSum = checksum.Checksum(hdr[8:40], 0)
	}
	sum := checksum.Combine(addrSum, ipProtoTCP)
	sum = checksum.Combine(sum, uint16(total-ipLen))
	binary.BigEndian.PutUint16(hdr[ipLen+16:], sum)
	return hdr, g
}
