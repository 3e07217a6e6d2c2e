package tun

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Offload is the optional side of a Device opened with Config.Offload: the
// kernel and the device exchange TCP super-packets of up to 64 KiB, each
// described by a GSO header, instead of one system call per MTU-sized
// packet. Read and Write still carry ordinary packets; ReadOffload,
// WriteBatch and SplitTCP let a caller keep the super-packet in one buffer
// and cut it without copying the payload.
type Offload interface {
	Device
	// ReadOffload reads one packet as the kernel queued it into p, which
	// should hold MaxOffloadSize bytes: a TCP super-packet when gso.Type is
	// not GSONone, and possibly with an incomplete transport checksum
	// (gso.NeedsCsum). SplitTCP and CompleteChecksum turn it into the
	// packets Read would return.
	ReadOffload(p []byte) (n int, gso GSO, err error)
	// WriteBatch sends pkts in order, writing runs of consecutive
	// full-sized segments of one TCP flow as one super-packet, which the
	// kernel takes as if its own GRO had merged them. It returns the
	// number of writes (system calls) it made; a packet the kernel refuses
	// is lost, as on a wire, and only ErrClosed is returned.
	WriteBatch(pkts [][]byte) (writes int, err error)
	// WritePackets is WriteBatch for packets held in pieces (a header and
	// the payload views of a netstack's packet buffer), written with one
	// writev each without copying. Only packets marked Offload are merged,
	// and their transport checksums are left to the kernel.
	WritePackets(pkts []OutPacket) (writes int, err error)
}

// OutPacket is one packet for Offload.WritePackets.
type OutPacket struct {
	// Data is the packet as consecutive slices; the IP and TCP headers of
	// a packet marked Offload must lie in Data[0].
	Data [][]byte
	// Offload says the kernel may compute the packet's TCP checksum: the
	// checksum field's content does not matter (the device writes the
	// pseudo-header sum in its place and sets NEEDS_CSUM), and runs of
	// such segments are merged into super-packets. Packets without it are
	// written as they are, checksums included (a deliberately broken
	// checksum reaches the kernel broken).
	Offload bool
	// GSO, when its Type is not GSONone, says the packet is a TCP
	// super-packet (one header, many segments' payload, the
	// pseudo-header sum in the checksum field) for the kernel to take
	// as it is: Size is the segment size; the checksum fields are set by
	// the device.
	GSO GSO
}

// MaxOffloadSize is the largest packet ReadOffload returns.
const MaxOffloadSize = 65535

// maxHeaderLen bounds IP (with IPv6 extension headers) plus TCP headers.
const maxHeaderLen = 256

// GSOType is the kind of super-packet, as in virtio-net's gso_type.
type GSOType uint8

// GSO types the device exchanges.
const (
	GSONone  GSOType = 0 // an ordinary packet
	GSOTCPv4 GSOType = 1 // a TCP/IPv4 super-packet
	GSOTCPv6 GSOType = 4 // a TCP/IPv6 super-packet
)

// virtio-net header constants (linux/virtio_net.h).
const (
	vnetHdrLen       = 10
	vnetFlagNeedsCsm = 1
	vnetGSOECN       = 0x80
	tcpCsumOffset    = 16
	udpCsumOffset    = 6
)

// GSO describes a packet read from an offload device: how to cut it into
// segments and how to finish its checksum.
type GSO struct {
	// Type is GSONone for an ordinary packet.
	Type GSOType
	// Size is the payload bytes per segment (the sender's MSS).
	Size uint16
	// NeedsCsum says the transport checksum is partial: the field at
	// CsumStart+CsumOffset holds only the pseudo-header sum.
	NeedsCsum bool
	// CsumStart is where the transport header starts; CsumOffset is the
	// checksum field's offset in it.
	CsumStart, CsumOffset uint16
}

// parseVnetHdr decodes the virtio-net header that precedes every packet.
// Its fields are in the host's byte order (legacy virtio).
func parseVnetHdr(b []byte) GSO {
	return GSO{
		Type:       GSOType(b[1] &^ vnetGSOECN),
		NeedsCsum:  b[0]&vnetFlagNeedsCsm != 0,
		Size:       binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

// putVnetHdr encodes g with header length hdrLen into b.
func putVnetHdr(b []byte, g GSO, hdrLen int) {
	b[0] = 0
	if g.NeedsCsum {
		b[0] = vnetFlagNeedsCsm
	}
	b[1] = byte(g.Type)
	binary.NativeEndian.PutUint16(b[2:], uint16(hdrLen))
	binary.NativeEndian.PutUint16(b[4:], g.Size)
	binary.NativeEndian.PutUint16(b[6:], g.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], g.CsumOffset)
}

// errBadGSO reports a super-packet whose headers do not add up.
var errBadGSO = errors.New("malformed offload packet")

// CompleteChecksum finishes the partial transport checksum of an ordinary
// packet read with gso.NeedsCsum set, in place. Packets without it are
// left alone.
func CompleteChecksum(pkt []byte, gso GSO) error {
	if !gso.NeedsCsum {
		return nil
	}
	start, field := int(gso.CsumStart), int(gso.CsumStart)+int(gso.CsumOffset)
	if field+2 > len(pkt) {
		return fmt.Errorf("complete checksum: %w: checksum field at %d of %d bytes", errBadGSO, field, len(pkt))
	}
	sum := ^checksum.Checksum(pkt[start:], 0)
	if sum == 0 && gso.CsumOffset == udpCsumOffset {
		sum = 0xffff // UDP sends a computed zero as all ones
	}
	binary.BigEndian.PutUint16(pkt[field:], sum)
	return nil
}

// TCPSegment is one packet cut from a TCP super-packet by SplitTCP: its
// headers, rebuilt in the caller's scratch buffer, and where its payload
// lies in the super-packet.
type TCPSegment struct {
	// Header is the segment's IP and TCP headers with lengths, sequence
	// number, flags and both checksums set for this segment.
	Header []byte
	// Off and Len locate the payload in the super-packet.
	Off, Len int
}

// Segment returns the whole segment as one packet (header and payload
// copied into dst's spare capacity).
func (s TCPSegment) Segment(dst, super []byte) []byte {
	dst = append(dst, s.Header...)
	return append(dst, super[s.Off:s.Off+s.Len]...)
}

// SplitTCP cuts the TCP super-packet pkt into the segments a sender
// without offload would have sent, calling fn for each in order: the IPv4
// identification counts up, the sequence number advances by gso.Size, FIN
// and PSH stay on the last segment and CWR on the first. The IPv4 header
// checksum is always recomputed; the TCP checksum is computed in full when
// checksums is set (a pass over the payload), and otherwise left partial
// (the pseudo-header sum, as the kernel hands out packets with NeedsCsum)
// for a receiver that trusts its source. scratch must hold the headers
// (up to 120 bytes); each call's Header reuses it.
func SplitTCP(pkt []byte, gso GSO, scratch []byte, checksums bool, fn func(TCPSegment) error) error {
	c, err := newCutter(pkt, gso, scratch)
	if err != nil {
		return err
	}
	for i, off := 0, c.hdrLen; off < len(pkt); i, off = i+1, off+c.mss {
		if err := fn(c.cut(i, 1, checksums)); err != nil {
			return err
		}
	}
	return nil
}

// SplitTCPHeaders is SplitTCP for a super-packet whose payload is held
// elsewhere (a netstack's packet buffer sending with GSO): hdr holds its IP
// and TCP headers, payloadLen bytes of payload follow them, and each
// segment's Off counts from the start of the payload. TCP checksums are
// left partial (the pseudo-header sum, with the segment's length), for the
// caller to finish over the payload or leave to the kernel; IPv4 header
// checksums are complete.
func SplitTCPHeaders(hdr []byte, payloadLen int, gso GSO, scratch []byte, fn func(TCPSegment) error) error {
	c, err := newHeaderCutter(hdr, payloadLen, gso, scratch)
	if err != nil {
		return err
	}
	for i, off := 0, c.hdrLen; off < c.size; i, off = i+1, off+c.mss {
		s := c.cut(i, 1, false)
		s.Off -= c.hdrLen
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

// MergeTCP returns the packet that carries segments first to
// first+count-1 of the super-packet pkt (as SplitTCP numbers them) in one:
// what a receiver's GRO builds from them, with the TCP checksum left
// partial. A run of all segments is pkt itself with the IPv4 header
// checksum recomputed. scratch must hold the headers.
func MergeTCP(pkt []byte, gso GSO, scratch []byte, first, count int) (TCPSegment, error) {
	c, err := newCutter(pkt, gso, scratch)
	if err != nil {
		return TCPSegment{}, err
	}
	if first < 0 || count < 1 || c.hdrLen+first*c.mss >= len(pkt) {
		return TCPSegment{}, fmt.Errorf("merge: %w: segments %d+%d of %d bytes", errBadGSO, first, count, len(pkt))
	}
	return c.cut(first, count, false), nil
}

// SegmentCount returns how many segments SplitTCP cuts pkt into.
func SegmentCount(pkt []byte, gso GSO, scratch []byte) (int, error) {
	c, err := newCutter(pkt, gso, scratch)
	if err != nil {
		return 0, err
	}
	return c.segments(), nil
}

// SegmentCountHeaders returns how many segments SplitTCPHeaders cuts the
// super-packet into, or the error it would return.
func SegmentCountHeaders(hdr []byte, payloadLen int, gso GSO, scratch []byte) (int, error) {
	c, err := newHeaderCutter(hdr, payloadLen, gso, scratch)
	if err != nil {
		return 0, err
	}
	return c.segments(), nil
}

// cutter holds what SplitTCP and MergeTCP read once from a super-packet's
// headers.
type cutter struct {
	pkt, hdr           []byte
	size               int // the super-packet's length (pkt may hold only its headers)
	ipLen, tcpLen, mss int
	hdrLen             int
	v4                 bool
	addrSum            uint16
	id                 uint16
	seq                uint32
	flags              uint8
}

func newCutter(pkt []byte, gso GSO, scratch []byte) (cutter, error) {
	ipLen, err := ipHeaderLen(pkt, gso)
	if err != nil {
		return cutter{}, err
	}
	if len(pkt) < ipLen+20 {
		return cutter{}, fmt.Errorf("split: %w: %d bytes", errBadGSO, len(pkt))
	}
	tcpLen := int(pkt[ipLen+12]>>4) * 4
	hdrLen := ipLen + tcpLen
	mss := int(gso.Size)
	if tcpLen < 20 || hdrLen > len(pkt) || hdrLen > len(scratch) || mss == 0 {
		return cutter{}, fmt.Errorf("split: %w: headers of %d bytes, segment size %d, %d bytes", errBadGSO, hdrLen, mss, len(pkt))
	}
	c := cutter{pkt: pkt, size: len(pkt), hdr: scratch[:hdrLen], ipLen: ipLen, tcpLen: tcpLen, mss: mss, hdrLen: hdrLen, v4: pkt[0]>>4 == 4}
	var src, dst []byte
	if c.v4 {
		src, dst = pkt[12:16], pkt[16:20]
	} else {
		src, dst = pkt[8:24], pkt[24:40]
	}
	c.addrSum = checksum.Checksum(dst, checksum.Checksum(src, 0))
	c.id = binary.BigEndian.Uint16(pkt[4:])
	c.seq = binary.BigEndian.Uint32(pkt[ipLen+4:])
	c.flags = pkt[ipLen+13]
	return c, nil
}

// newHeaderCutter is newCutter for a super-packet of which hdr holds the
// headers and payloadLen bytes of payload follow elsewhere.
func newHeaderCutter(hdr []byte, payloadLen int, gso GSO, scratch []byte) (cutter, error) {
	c, err := newCutter(hdr, gso, scratch)
	if err != nil {
		return cutter{}, err
	}
	if c.hdrLen != len(hdr) || payloadLen <= 0 {
		return cutter{}, fmt.Errorf("split: %w: %d header bytes of %d, %d bytes of payload", errBadGSO, c.hdrLen, len(hdr), payloadLen)
	}
	c.size = c.hdrLen + payloadLen
	return c, nil
}

// segments returns how many segments c cuts.
func (c *cutter) segments() int { return (c.size - c.hdrLen + c.mss - 1) / c.mss }

// cut builds the header of segments i to i+count-1 as one packet.
func (c *cutter) cut(i, count int, checksums bool) TCPSegment {
	pkt, hdr, ipLen := c.pkt, c.hdr, c.ipLen
	off := c.hdrLen + i*c.mss
	n := min(count*c.mss, c.size-off)
	copy(hdr, pkt[:c.hdrLen])
	if c.v4 {
		binary.BigEndian.PutUint16(hdr[2:], uint16(c.hdrLen+n))
		binary.BigEndian.PutUint16(hdr[4:], c.id+uint16(i))
		hdr[10], hdr[11] = 0, 0
		binary.BigEndian.PutUint16(hdr[10:], ^checksum.Checksum(hdr[:ipLen], 0))
	} else {
		binary.BigEndian.PutUint16(hdr[4:], uint16(c.hdrLen-40+n))
	}
	th := hdr[ipLen:]
	binary.BigEndian.PutUint32(th[4:], c.seq+uint32(i*c.mss))
	f := c.flags
	if off+n < c.size {
		f &^= tcpFIN | tcpPSH
	}
	if i > 0 {
		f &^= tcpCWR
	}
	th[13] = f
	th[16], th[17] = 0, 0
	sum := checksum.Combine(c.addrSum, uint16(ipProtoTCP))
	sum = checksum.Combine(sum, uint16(c.tcpLen+n))
	if checksums {
		sum = checksum.Checksum(th, sum)
		sum = ^checksum.Checksum(pkt[off:off+n], sum)
	}
	binary.BigEndian.PutUint16(th[16:], sum)
	return TCPSegment{Header: hdr, Off: off, Len: n}
}

// TCP flags and numbers SplitTCP and the coalescer need.
const (
	tcpFIN     = 0x01
	tcpSYN     = 0x02
	tcpRST     = 0x04
	tcpPSH     = 0x08
	tcpACK     = 0x10
	tcpURG     = 0x20
	tcpCWR     = 0x80
	ipProtoTCP = 6
)

// ipHeaderLen returns the length of pkt's IP header(s) before TCP.
func ipHeaderLen(pkt []byte, gso GSO) (int, error) {
	if gso.NeedsCsum && gso.CsumStart != 0 {
		return int(gso.CsumStart), nil
	}
	if len(pkt) < 1 {
		return 0, fmt.Errorf("split: %w: empty", errBadGSO)
	}
	switch pkt[0] >> 4 {
	case 4:
		return int(pkt[0]&0xf) * 4, nil
	case 6:
		return 40, nil
	}
	return 0, fmt.Errorf("split: %w: IP version %d", errBadGSO, pkt[0]>>4)
}
