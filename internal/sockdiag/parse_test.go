package sockdiag

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// cannedDump describes testdata/dump.bin: the dump's sequence numbers
// (IPv4, IPv6) and the sockets it lists, as known from other sources.
type cannedDump struct {
	Captured, Kernel string
	Seqs             []uint32
	Sockets          []cannedSocket
}

// cannedSocket is one socket of the canned dump.
type cannedSocket struct {
	Src, Dst, State, Timer string
	Inode                  uint64
	InfoState              uint8
	RTO, SndMSS, AdvMSS    uint32
	PMTU                   uint32
}

// loadCanned reads the datagrams of testdata/dump.bin and its description.
func loadCanned(t *testing.T) ([][]byte, cannedDump) {
	t.Helper()
	bin, err := os.ReadFile(filepath.Join("testdata", "dump.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var dgs [][]byte
	for len(bin) >= 4 {
		n := int(binary.NativeEndian.Uint32(bin))
		dgs = append(dgs, bin[4:4+n])
		bin = bin[4+n:]
	}
	js, err := os.ReadFile(filepath.Join("testdata", "dump.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want cannedDump
	if err := json.Unmarshal(js, &want); err != nil {
		t.Fatal(err)
	}
	return dgs, want
}

// parseAll runs a dump's datagrams through a parser: every seq in turn
// must end with NLMSG_DONE.
func parseAll(p *parser, dgs [][]byte, seqs []uint32) ([]Socket, error) {
	p.reset()
	var out []Socket
	i := 0
	for _, seq := range seqs {
		for {
			if i == len(dgs) {
				return out, errors.New("datagrams ended before NLMSG_DONE")
			}
			var done bool
			var err error
			out, done, err = p.parse(dgs[i], seq, out)
			i++
			if err != nil {
				return out, err
			}
			if done {
				break
			}
		}
	}
	return out, nil
}

// messages splits a datagram into its netlink messages.
func messages(dg []byte) [][]byte {
	var out [][]byte
	for len(dg) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(dg))
		out = append(out, dg[:l])
		dg = dg[align4(l):]
	}
	return out
}

// TestParseCanned parses replies a 6.18 kernel sent (testdata, captured by
// TestCaptureDump) and checks them against what getsockname, fstat and
// getsockopt(TCP_INFO) said about the same sockets.
func TestParseCanned(t *testing.T) {
	dgs, want := loadCanned(t)
	var p parser
	socks, err := parseAll(&p, dgs, want.Seqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != len(want.Sockets) {
		t.Fatalf("parsed %d sockets, want %d: %+v", len(socks), len(want.Sockets), socks)
	}
	for _, w := range want.Sockets {
		s, ok := find(socks, w.Inode)
		if !ok {
			t.Errorf("inode %d missing", w.Inode)
			continue
		}
		dst := ""
		if s.Dst.Port() != 0 {
			dst = s.Dst.String()
		}
		if s.Src.String() != w.Src || dst != w.Dst || s.State != w.State || s.Timer != w.Timer || s.Cookie == 0 {
			t.Errorf("inode %d: %+v\nwant %+v", w.Inode, s, w)
		}
		if s.Info == nil || s.Info.State != w.InfoState || s.Info.Rto != w.RTO || s.Info.Snd_mss != w.SndMSS || s.Info.Advmss != w.AdvMSS || s.Info.Pmtu != w.PMTU {
			t.Errorf("inode %d: tcp_info %+v, want state %d rto %d mss %d advmss %d pmtu %d", w.Inode, s.Info, w.InfoState, w.RTO, w.SndMSS, w.AdvMSS, w.PMTU)
		}
	}
}

// rewrite applies edit to every SOCK_DIAG_BY_FAMILY message of the
// datagrams, fixing up the netlink lengths.
func rewrite(dgs [][]byte, edit func(body []byte) []byte) [][]byte {
	var out [][]byte
	for _, dg := range dgs {
		var nd []byte
		for _, m := range messages(dg) {
			if binary.NativeEndian.Uint16(m[4:6]) == sockDiagByFamily {
				body := edit(append([]byte(nil), m[nlmsgHdrLen:]...))
				m = append(append([]byte(nil), m[:nlmsgHdrLen]...), body...)
				binary.NativeEndian.PutUint32(m, uint32(len(m)))
			}
			nd = append(nd, m...)
			for len(nd)%4 != 0 {
				nd = append(nd, 0)
			}
		}
		out = append(out, nd)
	}
	return out
}

// shortenInfo cuts INET_DIAG_INFO to n bytes, as an older kernel's
// smaller struct tcp_info.
func shortenInfo(n int) func([]byte) []byte {
	return func(body []byte) []byte {
		out := append([]byte(nil), body[:inetDiagMsgLen]...)
		for a := body[inetDiagMsgLen:]; len(a) >= rtattrLen; {
			l := int(binary.NativeEndian.Uint16(a))
			attr := append([]byte(nil), a[:l]...)
			if binary.NativeEndian.Uint16(a[2:]) == inetDiagInfo && l > rtattrLen+n {
				attr = attr[:rtattrLen+n]
				binary.NativeEndian.PutUint16(attr, uint16(len(attr)))
			}
			out = append(out, attr...)
			for len(out)%4 != 0 {
				out = append(out, 0)
			}
			a = a[min(align4(l), len(a)):]
		}
		return out
	}
}

// nlmsg builds one netlink message.
func nlmsg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+len(body)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// TestParseVariants: what older kernels, interleaved replies, errors and
// damaged input do to the parser.
func TestParseVariants(t *testing.T) {
	dgs, want := loadCanned(t)
	v4, v6 := want.Seqs[0], want.Seqs[1]
	var all []byte
	for _, dg := range dgs {
		all = append(all, dg...)
	}
	oneEach := func() [][]byte { // every message in its own datagram
		var out [][]byte
		for _, dg := range dgs {
			out = append(out, messages(dg)...)
		}
		return out
	}
	errnoMsg := func(seq uint32, errno syscall.Errno) []byte {
		body := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
		return nlmsg(nlmsgError, 0, seq, append(body, make([]byte, nlmsgHdrLen)...))
	}
	const tcpInfoV1 = 104 // struct tcp_info up to tcpi_total_retrans (Linux 2.6)
	for _, tc := range []struct {
		name    string
		dgs     [][]byte
		seqs    []uint32
		sockets int    // expected, when no error
		err     string // substring of the expected error
		errno   syscall.Errno
		check   func(t *testing.T, socks []Socket)
	}{
		{name: "one message per datagram", dgs: oneEach(), seqs: want.Seqs, sockets: len(want.Sockets)},
		{name: "stale replies of an abandoned dump are skipped", seqs: want.Seqs, sockets: len(want.Sockets),
			dgs: append([][]byte{append(nlmsg(sockDiagByFamily, 0, v4-1, make([]byte, inetDiagMsgLen)), nlmsg(nlmsgDone, 0, v4-1, nil)...)}, dgs...)},
		{name: "short tcp_info from an older kernel", seqs: want.Seqs, sockets: len(want.Sockets),
			dgs: rewrite(dgs, shortenInfo(tcpInfoV1)),
			check: func(t *testing.T, socks []Socket) {
				for _, s := range socks {
					w, _ := findCanned(want, s.Inode)
					if s.Info == nil || s.Info.Rto != w.RTO || s.Info.Snd_mss != w.SndMSS || s.Info.Pacing_rate != 0 || s.Info.Bytes_acked != 0 {
						t.Errorf("inode %d: %+v: want rto %d mss %d and nothing past byte %d", s.Inode, s.Info, w.RTO, w.SndMSS, tcpInfoV1)
					}
				}
			}},
		{name: "no tcp_info", seqs: want.Seqs, sockets: len(want.Sockets),
			dgs: rewrite(dgs, func(b []byte) []byte { return b[:inetDiagMsgLen] }),
			check: func(t *testing.T, socks []Socket) {
				for _, s := range socks {
					if s.Info != nil {
						t.Errorf("inode %d has tcp_info", s.Inode)
					}
				}
			}},
		{name: "longer tcp_info from a newer kernel", seqs: want.Seqs, sockets: len(want.Sockets),
			dgs: rewrite(dgs, func(b []byte) []byte {
				return append(b, 0x08, 0x00, 0x7f, 0x00, 1, 2, 3, 4) // and an unknown attribute
			})},
		{name: "dump interrupted", seqs: want.Seqs, sockets: len(want.Sockets),
			dgs: func() [][]byte {
				out := oneEach()
				m := append([]byte(nil), out[0]...)
				binary.NativeEndian.PutUint16(m[6:], binary.NativeEndian.Uint16(m[6:])|nlmFDumpIntr)
				out[0] = m
				return out
			}(),
			check: func(t *testing.T, socks []Socket) {}},
		{name: "no TCP diag module", seqs: []uint32{v6}, dgs: [][]byte{errnoMsg(v6, syscall.ENOENT)}, err: "tcp_diag", errno: syscall.ENOENT},
		{name: "other errno", seqs: []uint32{v4}, dgs: [][]byte{errnoMsg(v4, syscall.EPERM)}, err: "sock_diag dump", errno: syscall.EPERM},
		{name: "message longer than datagram", seqs: want.Seqs, dgs: [][]byte{messages(dgs[0])[0][:60]}, err: "malformed netlink message"},
		{name: "trailing bytes", seqs: want.Seqs, dgs: [][]byte{dgs[0], dgs[1], dgs[2], dgs[3][:12]}, err: "trailing"},
		{name: "replies after NLMSG_DONE in its datagram are not read", seqs: want.Seqs, dgs: [][]byte{all}, err: "datagrams ended"},
		{name: "truncated inet_diag_msg", seqs: []uint32{v4}, dgs: [][]byte{nlmsg(sockDiagByFamily, 0, v4, make([]byte, 40))}, err: "truncated inet_diag_msg"},
		{name: "bad attribute length", seqs: want.Seqs, err: "malformed attribute",
			dgs: rewrite(dgs, func(b []byte) []byte { return append(b, 0xff, 0x00, 0x02, 0x00) })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p parser
			socks, err := parseAll(&p, tc.dgs, tc.seqs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || (tc.errno != 0 && !errors.Is(err, tc.errno)) {
					t.Fatalf("err = %v, want %q matching %v", err, tc.err, tc.errno)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(socks) != tc.sockets {
				t.Fatalf("%d sockets, want %d", len(socks), tc.sockets)
			}
			if tc.name == "dump interrupted" && !p.intr {
				t.Error("NLM_F_DUMP_INTR not noticed")
			}
			if tc.check != nil {
				tc.check(t, socks)
			}
		})
	}
}

// findCanned returns the canned socket with this inode.
func findCanned(d cannedDump, inode uint64) (cannedSocket, bool) {
	for _, s := range d.Sockets {
		if s.Inode == inode {
			return s, true
		}
	}
	return cannedSocket{}, false
}

// TestTCPInfoSize: the non-Linux mirror of struct tcp_info has the layout
// the parser copies into.
func TestTCPInfoSize(t *testing.T) {
	if n := unsafe.Sizeof(TCPInfo{}); n != 280 {
		t.Errorf("sizeof(TCPInfo) = %d, want 280 (Linux 6.18's struct tcp_info)", n)
	}
}

// TestNames: state and timer numbers as the kernel and ss name them.
func TestNames(t *testing.T) {
	for _, tc := range []struct {
		n            uint8
		state, timer string
	}{
		{0, "STATE-0", TimerNone}, {1, StateEstablished, TimerRetrans}, {2, StateSynSent, TimerKeepalive},
		{3, StateSynRecv, TimerTimeWait}, {4, StateFinWait1, TimerProbe0}, {5, StateFinWait2, "unknown"},
		{6, StateTimeWait, "unknown"}, {10, StateListen, "unknown"}, {12, StateNewSynRecv, "unknown"}, {13, "STATE-13", "unknown"},
	} {
		if got := StateName(tc.n); got != tc.state {
			t.Errorf("StateName(%d) = %q, want %q", tc.n, got, tc.state)
		}
		if got := TimerName(tc.n); got != tc.timer {
			t.Errorf("TimerName(%d) = %q, want %q", tc.n, got, tc.timer)
		}
	}
}

// find returns the dumped socket with the given inode.
func find(socks []Socket, inode uint64) (Socket, bool) {
	for _, s := range socks {
		if s.Inode == inode {
			return s, true
		}
	}
	return Socket{}, false
}

// findTuple returns the dumped socket with the given addresses.
func findTuple(socks []Socket, src, dst netip.AddrPort) (Socket, bool) {
	for _, s := range socks {
		if s.Src == src && s.Dst == dst {
			return s, true
		}
	}
	return Socket{}, false
}
