package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unsafe"
)

// Linux ABI numbers, spelled out so that the parser (and its test on canned
// bytes) builds on every system; golang.org/x/sys/unix has no inet_diag
// definitions and other systems number AF_INET6 differently.
const (
	afInet  = 2  // AF_INET
	afInet6 = 10 // AF_INET6

	ipprotoTCP = 6 // IPPROTO_TCP

	nlmsgError       = 2      // NLMSG_ERROR
	nlmsgDone        = 3      // NLMSG_DONE
	nlmFRequest      = 0x1    // NLM_F_REQUEST
	nlmFDump         = 0x300  // NLM_F_ROOT|NLM_F_MATCH
	nlmFDumpIntr     = 0x10   // NLM_F_DUMP_INTR
	sockDiagByFamily = 20     // SOCK_DIAG_BY_FAMILY
	allStates        = 0x1ffe // every TCP state, 1 (ESTABLISHED) to 12 (NEW_SYN_RECV)

	inetDiagInfo     = 2 // INET_DIAG_INFO: struct tcp_info
	inetDiagShutdown = 8 // INET_DIAG_SHUTDOWN: u8 sk_shutdown

	nlmsgHdrLen    = 16 // struct nlmsghdr
	inetDiagReqLen = 56 // struct inet_diag_req_v2
	inetDiagMsgLen = 72 // struct inet_diag_msg
	rtattrLen      = 4  // struct rtattr
)

// requestLen is the size of one dump request.
const requestLen = nlmsgHdrLen + inetDiagReqLen

// appendRequest appends a SOCK_DIAG_BY_FAMILY dump request for every TCP
// socket of family, asking for INET_DIAG_INFO.
func appendRequest(b []byte, family uint8, seq uint32) []byte {
	ne := binary.NativeEndian
	b = ne.AppendUint32(b, requestLen)
	b = ne.AppendUint16(b, sockDiagByFamily)
	b = ne.AppendUint16(b, nlmFRequest|nlmFDump)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0) // nlmsg_pid: the kernel fills it in
	// struct inet_diag_req_v2
	b = append(b, family, ipprotoTCP, 1<<(inetDiagInfo-1), 0)
	b = ne.AppendUint32(b, allStates)
	// struct inet_diag_sockid: zero, no filter
	return append(b, make([]byte, 48)...)
}

// appendLookup appends a SOCK_DIAG_BY_FAMILY request for the one socket s
// describes (its addresses, interface and cookie), as Dump returned it.
func appendLookup(b []byte, s *Socket, seq uint32) []byte {
	ne, be := binary.NativeEndian, binary.BigEndian
	b = ne.AppendUint32(b, requestLen)
	b = ne.AppendUint16(b, sockDiagByFamily)
	b = ne.AppendUint16(b, nlmFRequest)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, uint8(s.Family), ipprotoTCP, 1<<(inetDiagInfo-1), 0)
	b = ne.AppendUint32(b, allStates)
	b = be.AppendUint16(b, s.Src.Port())
	b = be.AppendUint16(b, s.Dst.Port())
	b = appendAddr(b, s.Family, s.Src.Addr())
	b = appendAddr(b, s.Family, s.Dst.Addr())
	b = ne.AppendUint32(b, s.ifindex)
	b = ne.AppendUint32(b, uint32(s.Cookie))
	return ne.AppendUint32(b, uint32(s.Cookie>>32))
}

// appendAddr appends a as the 16 bytes of an inet_diag_sockid address:
// IPv4 in the first four for AF_INET, IPv4-mapped for AF_INET6.
func appendAddr(b []byte, family int, a netip.Addr) []byte {
	var raw [16]byte
	if family == afInet {
		v4 := a.As4()
		copy(raw[:], v4[:])
	} else {
		raw = a.As16() // re-maps an unmapped IPv4 address
	}
	return append(b, raw[:]...)
}

// parseLookup decodes the reply to appendLookup: the socket, or found
// false when the kernel no longer has it (ENOENT; ESTALE: its addresses
// now belong to another socket).
func (p *parser) parseLookup(b []byte, seq uint32) (s Socket, found bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			return Socket{}, false, fmt.Errorf("sock_diag: malformed netlink message (length %d of %d bytes)", l, len(b))
		}
		typ, mseq, msg := ne.Uint16(b[4:6]), ne.Uint32(b[8:12]), b[nlmsgHdrLen:l]
		b = b[min(align4(l), len(b)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case sockDiagByFamily:
			s, err := p.parseMsg(msg)
			return s, err == nil, err
		case nlmsgError:
			err := netlinkError(msg)
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESTALE) {
				return Socket{}, false, nil
			}
			return Socket{}, false, err
		}
	}
	return Socket{}, false, errNoReply
}

// errNoReply means a datagram held nothing for the request.
var errNoReply = errors.New("sock_diag: no reply to the request")

// ErrDumpInterrupted is returned, with the sockets read, when the kernel
// flagged a dump NLM_F_DUMP_INTR: the socket tables changed while it was
// read, so a socket may be missing or listed twice. Sampling again gives a
// consistent view.
var ErrDumpInterrupted = errors.New("sock_diag dump interrupted by concurrent changes")

// parser turns SOCK_DIAG_BY_FAMILY replies into Sockets. Reset reuses its
// tcp_info storage, which keeps a fast sampler from allocating.
type parser struct {
	infos []TCPInfo // tcp_info storage for one dump
	used  int       // infos handed out in the current dump
	intr  bool      // some message of the current dump had NLM_F_DUMP_INTR
}

// reset starts a new dump; Info pointers from the previous one may be
// overwritten from now on.
func (p *parser) reset() {
	p.used = 0
	p.intr = false
}

// info returns zeroed tcp_info storage for one socket.
func (p *parser) info() *TCPInfo {
	if p.used == len(p.infos) {
		// Grow by allocating a new block: Sockets already parsed keep
		// pointing into the old one.
		p.infos = make([]TCPInfo, max(16, 2*len(p.infos)))
		p.used = 0
	}
	ti := &p.infos[p.used]
	p.used++
	*ti = TCPInfo{}
	return ti
}

// parse appends the sockets in one datagram of netlink messages to out.
// done reports the NLMSG_DONE of the dump numbered seq; messages of other
// sequence numbers (left over from an abandoned dump) are skipped.
func (p *parser) parse(b []byte, seq uint32, out []Socket) (_ []Socket, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:4]))
		typ := ne.Uint16(b[4:6])
		flags := ne.Uint16(b[6:8])
		mseq := ne.Uint32(b[8:12])
		if l < nlmsgHdrLen || l > len(b) {
			return out, false, fmt.Errorf("sock_diag: malformed netlink message (length %d of %d bytes)", l, len(b))
		}
		msg := b[nlmsgHdrLen:l]
		b = b[min(align4(l), len(b)):]
		if mseq != seq {
			continue
		}
		if flags&nlmFDumpIntr != 0 {
			p.intr = true
		}
		switch typ {
		case nlmsgDone:
			return out, true, nil
		case nlmsgError:
			return out, false, netlinkError(msg)
		case sockDiagByFamily:
			s, err := p.parseMsg(msg)
			if err != nil {
				return out, false, err
			}
			out = append(out, s)
		}
	}
	if len(b) != 0 {
		return out, false, fmt.Errorf("sock_diag: malformed netlink reply (%d trailing bytes)", len(b))
	}
	return out, false, nil
}

// netlinkError decodes the payload of NLMSG_ERROR (struct nlmsgerr).
func netlinkError(msg []byte) error {
	if len(msg) < 4 {
		return errors.New("sock_diag: truncated netlink error message")
	}
	code := int32(binary.NativeEndian.Uint32(msg[0:4]))
	if code == 0 {
		return errors.New("sock_diag: unexpected netlink acknowledgement in a dump")
	}
	errno := syscall.Errno(-code)
	if errno == 2 { // ENOENT: no handler for the family
		return fmt.Errorf("sock_diag: the kernel has no TCP socket diagnostics (load module tcp_diag, or build with CONFIG_INET_TCP_DIAG): %w", errno)
	}
	return fmt.Errorf("sock_diag dump: %w", errno)
}

// parseMsg decodes one struct inet_diag_msg and its attributes.
func (p *parser) parseMsg(m []byte) (Socket, error) {
	if len(m) < inetDiagMsgLen {
		return Socket{}, fmt.Errorf("sock_diag: truncated inet_diag_msg (%d of %d bytes)", len(m), inetDiagMsgLen)
	}
	ne, be := binary.NativeEndian, binary.BigEndian
	s := Socket{
		Family:       int(m[0]),
		State:        StateName(m[1]),
		Timer:        TimerName(m[2]),
		TimerRetrans: int(m[3]),
		TimerExpires: time.Duration(ne.Uint32(m[52:56])) * time.Millisecond,
		RecvQ:        ne.Uint32(m[56:60]),
		SendQ:        ne.Uint32(m[60:64]),
		UID:          ne.Uint32(m[64:68]),
		Inode:        uint64(ne.Uint32(m[68:72])),
		Cookie:       uint64(ne.Uint32(m[44:48])) | uint64(ne.Uint32(m[48:52]))<<32,
		ifindex:      ne.Uint32(m[40:44]),
	}
	// struct inet_diag_sockid at m[4:52]: sport, dport (big endian), src[16],
	// dst[16], if, cookie[2].
	sport, dport := be.Uint16(m[4:6]), be.Uint16(m[6:8])
	var src, dst netip.Addr
	switch s.Family {
	case afInet:
		src, dst = netip.AddrFrom4([4]byte(m[8:12])), netip.AddrFrom4([4]byte(m[24:28]))
	case afInet6:
		src = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(m[24:40])).Unmap()
	default:
		return Socket{}, fmt.Errorf("sock_diag: unexpected address family %d", s.Family)
	}
	s.Src, s.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)

	for a := m[align4(inetDiagMsgLen):]; len(a) >= rtattrLen; {
		l := int(ne.Uint16(a[0:2]))
		typ := ne.Uint16(a[2:4])
		if l < rtattrLen || l > len(a) {
			return Socket{}, fmt.Errorf("sock_diag: malformed attribute (length %d of %d bytes)", l, len(a))
		}
		v := a[rtattrLen:l]
		a = a[min(align4(l), len(a)):]
		switch typ & 0x3fff { // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
		case inetDiagInfo:
			ti := p.info()
			// An older kernel's tcp_info is shorter: copy what it sent.
			copy(unsafe.Slice((*byte)(unsafe.Pointer(ti)), unsafe.Sizeof(*ti)), v)
			s.Info = ti
		case inetDiagShutdown:
			if len(v) >= 1 {
				s.Shutdown = v[0]
			}
		}
	}
	return s, nil
}

// align4 rounds up to the netlink alignment (NLMSG_ALIGN, RTA_ALIGN).
func align4(n int) int { return (n + 3) &^ 3 }
