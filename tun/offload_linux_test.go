package tun

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// newOffloadNamespace starts a namespace whose TUN is an offload device.
func newOffloadNamespace(t *testing.T) (*Namespace, Offload) {
	t.Helper()
	requireRoot(t)
	cfg := DefaultConfig()
	cfg.HostPrefix6 = netip.Prefix{}
	cfg.Offload = true
	ns := newTestNamespace(t, NamespaceConfig{TUN: cfg})
	off, ok := ns.Device().(Offload)
	if !ok {
		t.Fatalf("namespace device is %T, not an Offload", ns.Device())
	}
	return ns, off
}

// TestOffloadUDP checks both directions of an offload device with the
// kernel: a datagram the kernel sends arrives with its checksum completed,
// and one written to the device reaches a socket.
func TestOffloadUDP(t *testing.T) {
	ns, dev := newOffloadNamespace(t)
	peer := netip.MustParseAddrPort("198.18.0.2:9")
	c, err := ns.Dial(context.Background(), "udp4", peer.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := []byte("offload checksum test")
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	pkt := awaitPacket(t, dev, func(p []byte) bool {
		u, ok := parseUDP(p)
		return ok && u.dst == peer
	})
	u, _ := parseUDP(pkt)
	if !bytes.Equal(u.payload, payload) {
		t.Fatalf("payload %q, want %q", u.payload, payload)
	}
	ip := header.IPv4(pkt)
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-20))
	if checksum.Checksum(pkt[20:], sum) != 0xffff {
		t.Fatalf("UDP checksum %#04x of the datagram Read returned is not complete", binary.BigEndian.Uint16(pkt[26:]))
	}

	// The other way: a datagram written to the device reaches the socket.
	reply := ipv4UDP(peer, netip.MustParseAddrPort(c.LocalAddr().String()), []byte("back"))
	if _, err := dev.Write(reply); err != nil {
		t.Fatalf("Write: %v", err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "back" {
		t.Fatalf("socket read %q, %v; want \"back\"", buf[:n], err)
	}
}

// tcpFrom builds a segment from the fake peer 198.18.0.2:80 to the client.
func tcpFrom(client netip.AddrPort, seq, ack uint32, flags header.TCPFlags, opts []byte) []byte {
	tcpLen := header.TCPMinimumSize + len(opts)
	p := make([]byte, header.IPv4MinimumSize+tcpLen)
	src := tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
	dst := tcpip.AddrFrom4(client.Addr().As4())
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(p[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 80, DstPort: client.Port(), SeqNum: seq, AckNum: ack, DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 65535})
	copy(tcp[header.TCPMinimumSize:], opts)
	tcp.SetChecksum(^checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen))))
	return p
}

// TestOffloadTCPSuperPacket plays the peer of a kernel TCP connection by
// hand and checks that the kernel hands the device TCP super-packets, and
// that SplitTCP turns them into the valid, contiguous, MTU-sized segments
// that carry exactly the bytes the client sent.
func TestOffloadTCPSuperPacket(t *testing.T) {
	ns, dev := newOffloadNamespace(t)
	f, err := ns.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, _ := f.SyscallConn()
	rc.Control(func(fd uintptr) {
		unix.Connect(int(fd), &unix.SockaddrInet4{Port: 80, Addr: [4]byte{198, 18, 0, 2}})
	})
	type pktInfo struct {
		data []byte
		gso  GSO
	}
	packets := make(chan pktInfo, 1024)
	readErr := make(chan error, 1)
	go func() {
		for {
			buf := make([]byte, MaxOffloadSize)
			n, gso, err := dev.ReadOffload(buf)
			if err != nil {
				readErr <- err
				close(packets)
				return
			}
			packets <- pktInfo{buf[:n], gso}
		}
	}()
	t.Cleanup(func() {
		dev.Close()
		for range packets {
		}
	})
	// A hang (the kernel stopped sending) ends in a failure, not a timeout.
	guard := time.AfterFunc(safetyTimeout, func() { dev.Close() })
	defer guard.Stop()
	next := func() pktInfo {
		t.Helper()
		p, ok := <-packets
		if !ok {
			t.Fatalf("ReadOffload: %v", <-readErr)
		}
		return p
	}
	// Handshake: answer the SYN, advertising an MSS of 1460.
	var client netip.AddrPort
	var clientISN uint32
	for {
		p := next().data
		if len(p) >= 40 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_TCP && header.TCP(p[20:]).Flags()&header.TCPFlagSyn != 0 {
			tcp := header.TCP(p[20:])
			client = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), tcp.SourcePort())
			clientISN = tcp.SequenceNumber()
			break
		}
	}
	const peerISN = 1000
	if _, err := dev.Write(tcpFrom(client, peerISN, clientISN+1, header.TCPFlagSyn|header.TCPFlagAck, []byte{2, 4, 0x05, 0xb4})); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 200_000)
	for i := range want {
		want[i] = byte(i * 13)
	}
	wrote := make(chan error, 1)
	go func() {
		// The poller waits for the connection, then for send-buffer room
		// as the ACKs below arrive.
		_, err := f.Write(want)
		wrote <- err
	}()

	var got []byte
	expect := clientISN + 1
	supers := 0
	var scratch [maxHeaderLen]byte
	take := func(seg []byte) {
		t.Helper()
		if len(seg) > 1500 {
			t.Fatalf("segment of %d bytes exceeds the MTU", len(seg))
		}
		checkValid(t, seg)
		tcp := header.TCP(seg[20:])
		payload := tcp.Payload()
		switch seq := tcp.SequenceNumber(); {
		case len(payload) == 0 || seq+uint32(len(payload)) <= expect:
			// an ACK, or a retransmission (a tail-loss probe) of bytes
			// already taken
		case seq != expect:
			t.Fatalf("segment seq %d, want %d", seq, expect)
		default:
			got = append(got, payload...)
			expect += uint32(len(payload))
		}
	}
	for len(got) < len(want) {
		p := next()
		if len(p.data) < 40 || p.data[0]>>4 != 4 || p.data[9] != unix.IPPROTO_TCP {
			// The link's own IPv6 chatter (an MLD report, a router
			// solicitation) comes whenever it likes: not ours.
			continue
		}
		if p.gso.Type == GSONone {
			// The handshake's final ACK, or a tail shorter than two
			// segments: an ordinary packet, its checksum left to us.
			if err := CompleteChecksum(p.data, p.gso); err != nil {
				t.Fatal(err)
			}
			take(p.data)
		} else {
			if p.gso.Type != GSOTCPv4 || len(p.data) <= 1500 {
				t.Fatalf("super-packet of %d bytes with GSO %+v, want more than the MTU of TCPv4", len(p.data), p.gso)
			}
			supers++
			err := SplitTCP(p.data, p.gso, scratch[:], true, func(s TCPSegment) error {
				take(s.Segment(nil, p.data))
				return nil
			})
			if err != nil {
				t.Fatalf("SplitTCP: %v", err)
			}
		}
		if _, err := dev.Write(tcpFrom(client, peerISN+1, expect, header.TCPFlagAck, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if supers == 0 {
		t.Fatal("the kernel sent no super-packet")
	}
	if err := <-wrote; err != nil {
		t.Fatalf("client write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("reassembled %d bytes differ from the %d sent", len(got), len(want))
	}
	t.Logf("%d bytes in %d super-packets", len(got), supers)
}
