package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// hostileEnv sets how long TestHostileTraffic runs (a Go duration);
// the default keeps it inside CI's race-enabled budget.
const hostileEnv = "UNPLUG_HOSTILE_DURATION"

// hostileRate is how many hostile packets a second the test writes.
const hostileRate = 1500

// TestHostileTraffic runs the peer on an offload TUN in a private
// namespace and, while kernel TCP connections move verified data through
// it (super-packets cut, judged, merged again and delayed by fault rules,
// and every packet recorded by a capture), writes hostile packets onto the
// TUN from the namespace's side with a packet socket: truncated and
// malformed headers, IPv4 options, IPv4 and IPv6 fragments in any order,
// overlapping and duplicated, and bursts of MSS-sized segments. CI runs it
// with -race: a packet buffer handed back for reuse while gVisor still
// reads it shows up there as a data race. The echoed bytes must come back
// intact and the peer must still answer afterwards.
func TestHostileTraffic(t *testing.T) {
	requireRoot(t)
	// CI runs it once more with -race (make test); the plain run is a
	// shorter smoke test.
	dur := 5 * time.Second
	if raceEnabled {
		dur = 30 * time.Second
	}
	if v := os.Getenv(hostileEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", hostileEnv, v, err)
		}
		dur = d
	}
	ns := newHostileNamespace(t)
	specs := parseSpecs(t,
		// Lost segments make the GRO layer merge what is left of a
		// super-packet; delayed ones arrive in the middle of later
		// batches and outlive the buffers they were read into.
		"loss 1% dir=in port=7",
		"delay 1ms jitter=3ms dir=in port=9",
		"duplicate 2% dir=in",
		"reorder 1% gap=2 dir=in port=9",
	)
	pcap, err := capture.NewWriter(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := New(context.Background(), Options{
		Device: ns.Device(), Faults: specs, Observer: pcap,
		Services: services.Config{Echo: 7, Discard: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := peer.Close(); err != nil {
			t.Errorf("peer.Close: %v", err)
		}
		pcap.Close()
	})

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoLoop(ctx, ns, "tcp4", uint64(i))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- discardLoop(ctx, ns, "tcp6")
	}()
	inj := newInjector(t, ns)
	sent, start := 0, time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	for ctx.Err() == nil {
		for _, p := range hostilePackets(rng) {
			if err := inj.send(p); err != nil {
				t.Fatalf("inject: %v", err)
			}
			sent++
		}
		// Paced, so the TUN's queue keeps room for the real traffic: a
		// flood that only overflows the queue tests nothing.
		if ahead := time.Duration(sent)*time.Second/hostileRate - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	wg.Wait()
	close(errs)
	failed := false
	for err := range errs {
		if err != nil {
			t.Error(err)
			failed = true
		}
	}
	if failed {
		for _, c := range peer.Status().Conns {
			if c.State != "TIME-WAIT" {
				t.Logf("peer: %+v", c)
			}
		}
	}
	st := peer.Status().Link
	off := peer.OffloadStats()
	t.Logf("%d hostile packets; link: in %d, unparseable %d, dropped %d, delayed %d; offload %+v",
		sent, st.In, st.Unparseable, st.Dropped, st.Delayed, off)
	if off.SuperPackets == 0 || off.Merged == 0 {
		t.Errorf("no super-packet was cut and merged again (%+v): the GRO path went untested", off)
	}
	// The peer still serves after all of it.
	fctx, fcancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer fcancel()
	if err := echoOnce(fctx, ns, "tcp4", []byte("still here")); err != nil {
		t.Fatalf("echo after the hostile traffic: %v", err)
	}
}

func newHostileNamespace(t *testing.T) *tun.Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	ns, err := tun.NewNamespace(ctx, tun.NamespaceConfig{TUN: tun.DefaultConfig()})
	if err != nil {
		t.Fatalf("NewNamespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	if _, ok := ns.Device().(tun.Offload); !ok {
		t.Skip("the kernel gives this TUN no offloads: the super-packet path cannot be tested")
	}
	return ns
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a TUN device")
	}
}

// echoEachFamily sends block through the echo service over IPv4, then
// IPv6, and fails t if either does not come back exactly.
func echoEachFamily(t *testing.T, ns *tun.Namespace, block []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	for _, network := range []string{"tcp4", "tcp6"} {
		if err := echoOnce(ctx, ns, network, block); err != nil {
			t.Fatalf("%s echo of %d bytes: %v", network, len(block), err)
		}
	}
}

// patterned returns n bytes whose pattern does not repeat within a
// segment, so that a byte lost, doubled or moved shows.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i>>9)
	}
	return b
}

// echoLoop sends patterned blocks through the echo service until ctx ends,
// checking every byte that comes back.
func echoLoop(ctx context.Context, ns *tun.Namespace, network string, seed uint64) error {
	block := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(block)
	for ctx.Err() == nil {
		if err := echoOnce(ctx, ns, network, block); err != nil {
			if ended(ctx) {
				return nil
			}
			return err
		}
	}
	return nil
}

// ended reports whether ctx is done or its deadline has passed (a
// connect bounded by it can time out a moment before ctx reports it).
func ended(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(d)
}

// echoOnce sends b through the echo service and compares what returns.
func echoOnce(ctx context.Context, ns *tun.Namespace, network string, b []byte) error {
	addr := DefaultAddr4.String()
	if network == "tcp6" {
		addr = "[" + DefaultAddr6.String() + "]"
	}
	c, err := ns.Dial(ctx, network, addr+":7", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(2 * safetyTimeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		werr <- err
	}()
	got := make([]byte, len(b))
	if n, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("%w after %d of %d bytes (%s)", err, n, len(b), kernelInfo(c))
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, b) {
		for i := range got {
			if got[i] != b[i] {
				return errors.New("echo corrupted at byte " + strconv.Itoa(i))
			}
		}
	}
	return nil
}

// kernelInfo describes the kernel's side of c for failure messages.
func kernelInfo(c net.Conn) string {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return "not TCP"
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err.Error()
	}
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil {
		return cerr.Error()
	}
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("kernel %s: state %d, unacked %d, retransmits %d, rto %dus, backoff %d, send window %d",
		c.LocalAddr(), info.State, info.Unacked, info.Total_retrans, info.Rto, info.Backoff, info.Snd_wnd)
}

// discardLoop writes into the discard service until ctx ends.
func discardLoop(ctx context.Context, ns *tun.Namespace, network string) error {
	c, err := ns.Dial(ctx, network, "["+DefaultAddr6.String()+"]:9", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	b := make([]byte, 256<<10)
	for ctx.Err() == nil {
		if _, err := c.Write(b); err != nil {
			if ended(ctx) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
	return nil
}

// injector writes raw IP packets onto the TUN from the namespace's side:
// a packet socket bound to the device, so the packets reach the peer
// exactly as built, however malformed.
type injector struct {
	f, vnet *os.File // vnet sends a virtio-net header first: super-packets
	to      unix.SockaddrLinklayer
}

func newInjector(t *testing.T, ns *tun.Namespace) *injector {
	t.Helper()
	s, err := ns.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, err := unix.NewIfreq(ns.Device().Name())
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	err = unix.IoctlIfreq(int(s.Fd()), unix.SIOCGIFINDEX, ifr)
	s.Close()
	if err != nil {
		t.Fatalf("index of %s: %v", ns.Device().Name(), err)
	}
	f, err := ns.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	vnet, err := ns.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // a TUN has no link header
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { vnet.Close() })
	if err := unix.SetsockoptInt(int(vnet.Fd()), unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		t.Fatalf("PACKET_VNET_HDR: %v", err)
	}
	return &injector{f: f, vnet: vnet, to: unix.SockaddrLinklayer{Ifindex: int(ifr.Uint32())}}
}

func (in *injector) send(p []byte) error {
	to := in.to
	to.Protocol = htons(unix.ETH_P_IP)
	if len(p) > 0 && p[0]>>4 == 6 {
		to.Protocol = htons(unix.ETH_P_IPV6)
	}
	fd := int(in.f.Fd())
	if len(p) > 0 && p[0] == vnetMark {
		fd, p = int(in.vnet.Fd()), p[1:]
		to.Protocol = htons(unix.ETH_P_IP)
		if len(p) > 10 && p[10]>>4 == 6 {
			to.Protocol = htons(unix.ETH_P_IPV6)
		}
	}
	for {
		err := unix.Sendto(fd, p, 0, &to)
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(100 * time.Microsecond) // the TUN queue is full
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOMEM) {
			return nil // the kernel refuses some lengths itself
		}
		return err
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// hostilePackets returns one random group of hostile packets.
func hostilePackets(rng *rand.Rand) [][]byte {
	switch rng.IntN(9) {
	case 0: // truncated anywhere
		p := tcp4(uint16(40000+rng.IntN(1000)), 7, rng.Uint32(), header.TCPFlagAck|header.TCPFlagPsh, make([]byte, rng.IntN(200)))
		return [][]byte{p[:1+rng.IntN(len(p))]}
	case 1: // lengths and header lengths that lie
		p := udp4(40000, 9, make([]byte, rng.IntN(100)))
		switch rng.IntN(3) {
		case 0:
			p[0] = 0x40 | byte(rng.IntN(16))
		case 1:
			binary.BigEndian.PutUint16(p[2:], uint16(rng.IntN(2*len(p))))
		default:
			p[0] = 0x60 | p[0]&0xf // IPv4 bytes claiming to be IPv6
		}
		return [][]byte{p}
	case 2: // IPv4 options on TCP, UDP and ICMP
		var inner []byte
		switch rng.IntN(3) {
		case 0:
			inner = tcpSegment(netip.AddrPortFrom(hostAddr4, uint16(40000+rng.IntN(1000))), netip.AddrPortFrom(DefaultAddr4, 7), rng.Uint32(), 0, header.TCPFlagSyn, nil)
		case 1:
			inner = udp4(40000, 9, make([]byte, 32))[header.IPv4MinimumSize:]
		default:
			inner = echo4(uint16(rng.IntN(1000)), 1)[header.IPv4MinimumSize:]
		}
		proto := []uint8{uint8(header.TCPProtocolNumber), uint8(header.UDPProtocolNumber), uint8(header.ICMPv4ProtocolNumber)}
		return [][]byte{ipv4WithOptions(rng, proto[min(2, rng.IntN(3))], inner)}
	case 3: // IPv4 fragments: reordered, overlapping, duplicated, with options
		return fragments4(rng)
	case 4: // a TCP segment whose first fragment is shorter than its header, in order
		return tinyFirst4(rng)
	case 5: // IPv6 fragments
		return fragments6(rng)
	case 6: // a burst of MSS-sized segments of one flow (no connection)
		var out [][]byte
		seq := rng.Uint32()
		port := uint16(41000 + rng.IntN(1000))
		for range 8 {
			out = append(out, tcp4(port, 9, seq, header.TCPFlagAck, make([]byte, 1448)))
			seq += 1448
		}
		return out
	case 8: // a super-packet with a virtio-net header, as a guest would send
		return [][]byte{superPacket(rng)}
	default: // a valid ping, so the echo path keeps running too
		return [][]byte{echo4(uint16(rng.IntN(1<<16)), uint16(rng.IntN(1<<16)))}
	}
}

// ipv4WithOptions builds an IPv4 packet with 4–40 bytes of random
// (sometimes valid, sometimes not) options before payload.
func ipv4WithOptions(rng *rand.Rand, proto uint8, payload []byte) []byte {
	optLen := 4 * (1 + rng.IntN(10))
	opts := make([]byte, optLen)
	switch rng.IntN(4) {
	case 0: // NOPs and an end of list
		for i := range opts {
			opts[i] = 1
		}
		opts[len(opts)-1] = 0
	case 1: // record route with room
		opts[0], opts[1], opts[2] = 7, byte(min(optLen-1, 39)), 4
	case 2: // timestamp
		opts[0], opts[1], opts[2], opts[3] = 68, byte(optLen), 5, 0
	default:
		for i := range opts {
			opts[i] = byte(rng.IntN(256))
		}
	}
	hl := header.IPv4MinimumSize + optLen
	p := make([]byte, hl+len(payload))
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(p)),
		TTL:         64,
		Protocol:    proto,
		SrcAddr:     tcpipAddr(hostAddr4),
		DstAddr:     tcpipAddr(DefaultAddr4),
	})
	p[0] = 0x40 | byte(hl/4)
	copy(p[header.IPv4MinimumSize:hl], opts)
	copy(p[hl:], payload)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return p
}

// fragments4 cuts a UDP or ICMP datagram (sometimes a TCP segment for the
// echo port) into IPv4 fragments and shuffles, overlaps and repeats them.
func fragments4(rng *rand.Rand) [][]byte {
	var dgram []byte
	switch rng.IntN(3) {
	case 0:
		dgram = udp4(uint16(40000+rng.IntN(100)), 9, make([]byte, 200+rng.IntN(3000)))
	case 1:
		b := make([]byte, header.ICMPv4MinimumSize+200+rng.IntN(3000))
		icmp := header.ICMPv4(b)
		icmp.SetType(header.ICMPv4Echo)
		icmp.SetIdent(uint16(rng.IntN(1 << 16)))
		icmp.SetChecksum(^checksum.Checksum(b, 0))
		dgram = ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.ICMPv4ProtocolNumber), b)
	default:
		dgram = tcp4(uint16(40000+rng.IntN(100)), 7, rng.Uint32(), header.TCPFlagSyn, make([]byte, 100+rng.IntN(1000)))
	}
	payload := dgram[header.IPv4MinimumSize:]
	id := uint16(rng.IntN(1 << 16))
	var frags [][]byte
	tiny := rng.IntN(3) == 0 // a first fragment shorter than the transport header
	for off := 0; off < len(payload); {
		n := 8 * (1 + rng.IntN(100))
		if off == 0 && tiny {
			n = 8 * (1 + rng.IntN(2))
		}
		if rng.IntN(5) == 0 && off >= 16 {
			off -= 8 * (1 + rng.IntN(2)) // overlap the previous fragment
		}
		end := min(off+n, len(payload))
		more := end < len(payload)
		frags = append(frags, fragment4At(dgram[9], id, off, more, payload[off:end], rng.IntN(6) == 0 && off == 0, rng))
		off = end
	}
	if rng.IntN(3) == 0 {
		frags = append(frags, frags[rng.IntN(len(frags))]) // a duplicate
	}
	rng.Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
	return frags
}

// tinyFirst4 sends a TCP segment for the echo port as IPv4 fragments in
// order, the first carrying only 8 or 16 bytes of the TCP header: gVisor's
// IPv4 reassembly then pulls the header up across fragments while it
// still holds a slice of the first fragment's memory (see
// fault.Endpoint's handling of such fragments).
func tinyFirst4(rng *rand.Rand) [][]byte {
	dgram := tcp4(uint16(40000+rng.IntN(100)), 7, rng.Uint32(), header.TCPFlagAck, make([]byte, rng.IntN(64)))
	payload := dgram[header.IPv4MinimumSize:]
	id := uint16(rng.IntN(1 << 16))
	cut := 8 * (1 + rng.IntN(2))
	return [][]byte{
		fragment4At(dgram[9], id, 0, true, payload[:cut], false, rng),
		fragment4At(dgram[9], id, cut, false, payload[cut:], false, rng),
	}
}

func fragment4At(proto uint8, id uint16, off int, more bool, data []byte, options bool, rng *rand.Rand) []byte {
	var p []byte
	if options {
		p = ipv4WithOptions(rng, proto, data)
	} else {
		p = ipv4Packet(hostAddr4, DefaultAddr4, proto, data)
	}
	ip := header.IPv4(p)
	flags := uint8(0)
	if more {
		flags = header.IPv4FlagMoreFragments
	}
	ip.SetID(id)
	ip.SetFlagsFragmentOffset(flags, uint16(off))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return p
}

// fragments6 cuts an ICMPv6 echo request or a UDP datagram into IPv6
// fragments, shuffled, overlapping and repeated.
func fragments6(rng *rand.Rand) [][]byte {
	var next uint8
	var l4 []byte
	if rng.IntN(2) == 0 {
		next = uint8(header.ICMPv6ProtocolNumber)
		l4 = make([]byte, header.ICMPv6EchoMinimumSize+200+rng.IntN(3000))
		icmp := header.ICMPv6(l4)
		icmp.SetType(header.ICMPv6EchoRequest)
		icmp.SetIdent(uint16(rng.IntN(1 << 16)))
		icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: icmp, Src: tcpipAddr(hostAddr6), Dst: tcpipAddr(DefaultAddr6),
		}))
	} else {
		next = uint8(header.UDPProtocolNumber)
		l4 = make([]byte, header.UDPMinimumSize+200+rng.IntN(3000))
		header.UDP(l4).Encode(&header.UDPFields{SrcPort: 40000, DstPort: 9, Length: uint16(len(l4))})
	}
	id := rng.Uint32()
	var frags [][]byte
	for off := 0; off < len(l4); {
		n := 8 * (1 + rng.IntN(100))
		if rng.IntN(5) == 0 && off >= 16 {
			off -= 8
		}
		end := min(off+n, len(l4))
		fh := make([]byte, 8)
		fh[0] = next
		m := uint16(0)
		if end < len(l4) {
			m = 1
		}
		binary.BigEndian.PutUint16(fh[2:], uint16(off)|m)
		binary.BigEndian.PutUint32(fh[4:], id)
		frags = append(frags, ipv6Packet(uint8(header.IPv6FragmentExtHdrIdentifier), append(fh, l4[off:end]...)))
		off = end
	}
	if rng.IntN(3) == 0 {
		frags = append(frags, frags[rng.IntN(len(frags))])
	}
	rng.Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
	return frags
}

// vnetMark as the first byte of a hostile packet sends the rest, a
// virtio-net header and a packet, through the injector's vnet socket.
const vnetMark = 0xff

// superPacket builds a TCP super-packet behind a virtio-net header with a
// random segment size and sometimes IPv4 options, bad lengths or flags
// that no TSO packet has (SYN, FIN, RST, fragment bits).
func superPacket(rng *rand.Rand) []byte {
	payload := make([]byte, 1000+rng.IntN(20000))
	seg := tcpSegment(netip.AddrPortFrom(hostAddr4, uint16(40000+rng.IntN(100))), netip.AddrPortFrom(DefaultAddr4, []uint16{7, 9, 80}[rng.IntN(3)]),
		rng.Uint32(), rng.Uint32(), header.TCPFlags(rng.IntN(256))|header.TCPFlagAck, payload)
	var p []byte
	if rng.IntN(3) == 0 {
		p = ipv4WithOptions(rng, uint8(header.TCPProtocolNumber), seg)
	} else {
		p = ipv4Packet(hostAddr4, DefaultAddr4, uint8(header.TCPProtocolNumber), seg)
	}
	if rng.IntN(4) == 0 {
		binary.BigEndian.PutUint16(p[6:], uint16(rng.IntN(1<<16))) // fragment bits
	}
	if rng.IntN(6) == 0 {
		binary.BigEndian.PutUint16(p[2:], uint16(rng.IntN(len(p)))) // a lying total length
	}
	ihl := int(p[0]&0xf) * 4
	hdr := make([]byte, 1+10)
	hdr[0] = vnetMark
	v := hdr[1:]
	v[0] = 1 // needs checksum
	v[1] = 1 // TCPv4
	binary.NativeEndian.PutUint16(v[2:], uint16(ihl+20))
	binary.NativeEndian.PutUint16(v[4:], uint16(200+rng.IntN(1300)))
	binary.NativeEndian.PutUint16(v[6:], uint16(ihl))
	binary.NativeEndian.PutUint16(v[8:], 16)
	return append(hdr, p...)
}
