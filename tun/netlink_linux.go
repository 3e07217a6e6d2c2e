package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// ne is the byte order of netlink headers and attributes.
var ne = binary.NativeEndian

// rtnl is a minimal synchronous rtnetlink client for the current network
// namespace: send one request, wait for its acknowledgement. It replaces the
// `ip` command so unplug needs no iproute2 at runtime.
type rtnl struct {
	fd  int
	seq uint32
	buf []byte
}

// openRtnl opens an rtnetlink socket in the calling thread's network
// namespace.
func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netlink: %w", err)
	}
	return &rtnl{fd: fd, buf: make([]byte, 1<<16)}, nil
}

// Close closes the socket.
func (c *rtnl) Close() error { return unix.Close(c.fd) }

// do sends one request with NLM_F_ACK and returns the replies that preceded
// the acknowledgement; a negative acknowledgement becomes its errno.
func (c *rtnl) do(typ, flags uint16, body []byte) ([]syscall.NetlinkMessage, error) {
	c.seq++
	msg := make([]byte, 0, unix.SizeofNlMsghdr+len(body))
	msg = ne.AppendUint32(msg, uint32(unix.SizeofNlMsghdr+len(body)))
	msg = ne.AppendUint16(msg, typ)
	msg = ne.AppendUint16(msg, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	msg = ne.AppendUint32(msg, c.seq)
	msg = ne.AppendUint32(msg, 0)
	msg = append(msg, body...)
	if err := retryEINTR(func() error {
		return unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}); err != nil {
		return nil, err
	}
	var replies []syscall.NetlinkMessage
	for {
		msgs, err := c.receive()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.Header.Seq != c.seq {
				continue
			}
			if m.Header.Type != unix.NLMSG_ERROR {
				m.Data = bytes.Clone(m.Data)
				replies = append(replies, m)
				continue
			}
			if len(m.Data) < 4 {
				return nil, errors.New("short netlink acknowledgement")
			}
			if code := int32(ne.Uint32(m.Data)); code != 0 {
				return nil, syscall.Errno(-code)
			}
			return replies, nil
		}
	}
}

// receive reads and parses one datagram.
func (c *rtnl) receive() ([]syscall.NetlinkMessage, error) {
	var n int
	err := retryEINTR(func() (err error) {
		n, _, err = unix.Recvfrom(c.fd, c.buf, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("receive netlink: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
	if err != nil {
		return nil, fmt.Errorf("parse netlink: %w", err)
	}
	return msgs, nil
}

// retryEINTR repeats a raw syscall interrupted by a signal (Go's runtime
// preempts threads with signals).
func retryEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// linkInfo is what unplug needs to know about an existing interface.
type linkInfo struct {
	index   int
	mtu     int
	txqlen  int
	kind    string // "tun", "veth", ... ("" for lo and other kindless links)
	carrier bool   // a TUN has carrier while some process holds it open
	tun     tunInfo
}

// tunInfo is a TUN/TAP device's IFLA_INFO_DATA.
type tunInfo struct {
	tap        bool
	owner      int // -1: no owner set
	group      int // -1: no group set
	persist    bool
	multiQueue bool
}

// linkByName looks an interface up; a missing one yields unix.ENODEV.
func (c *rtnl) linkByName(name string) (linkInfo, error) {
	body := ifInfomsg(0, 0, 0)
	body = appendAttr(body, unix.IFLA_IFNAME, append([]byte(name), 0))
	msgs, err := c.do(unix.RTM_GETLINK, 0, body)
	if err != nil {
		return linkInfo{}, err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK && len(m.Data) >= unix.SizeofIfInfomsg {
			return parseLink(m.Data), nil
		}
	}
	return linkInfo{}, fmt.Errorf("get link %s: no reply", name)
}

// parseLink decodes an RTM_NEWLINK payload.
func parseLink(b []byte) linkInfo {
	li := linkInfo{index: int(int32(ne.Uint32(b[4:8]))), tun: tunInfo{owner: -1, group: -1}}
	attrs := parseAttrs(b[unix.SizeofIfInfomsg:])
	if v := attrs[unix.IFLA_MTU]; len(v) >= 4 {
		li.mtu = int(ne.Uint32(v))
	}
	if v := attrs[unix.IFLA_TXQLEN]; len(v) >= 4 {
		li.txqlen = int(ne.Uint32(v))
	}
	if v := attrs[unix.IFLA_CARRIER]; len(v) >= 1 {
		li.carrier = v[0] != 0
	}
	info := parseAttrs(attrs[unix.IFLA_LINKINFO])
	li.kind = string(bytes.TrimRight(info[unix.IFLA_INFO_KIND], "\x00"))
	if li.kind == "tun" {
		li.tun = parseTunInfo(parseAttrs(info[unix.IFLA_INFO_DATA]))
	}
	return li
}

// parseTunInfo decodes the IFLA_TUN_* attributes.
func parseTunInfo(data map[uint16][]byte) tunInfo {
	ti := tunInfo{owner: -1, group: -1}
	u8 := func(t uint16) bool { v := data[t]; return len(v) >= 1 && v[0] != 0 }
	ti.tap = len(data[unix.IFLA_TUN_TYPE]) >= 1 && data[unix.IFLA_TUN_TYPE][0] == unix.IFF_TAP
	ti.persist = u8(unix.IFLA_TUN_PERSIST)
	ti.multiQueue = u8(unix.IFLA_TUN_MULTI_QUEUE)
	if v := data[unix.IFLA_TUN_OWNER]; len(v) >= 4 {
		ti.owner = int(ne.Uint32(v))
	}
	if v := data[unix.IFLA_TUN_GROUP]; len(v) >= 4 {
		ti.group = int(ne.Uint32(v))
	}
	return ti
}

// txQueueLen is the transmit queue a created TUN gets: the packets the
// kernel holds for the peer while it is not reading. The kernel's default
// of 500 overflowed when 10 000 connections sent at once (35 % of the
// kernel → peer packets dropped at the device, on top of the fault rules;
// cmd/unplug's TestSoak); a NIC's ring does not drop such a burst either.
const txQueueLen = 1 << 15

// setLinkUp brings an interface up and, if mtu > 0 (a TUN unplug made),
// sets its MTU and transmit queue length (txQueueLen).
func (c *rtnl) setLinkUp(index, mtu int) error {
	body := ifInfomsg(index, unix.IFF_UP, unix.IFF_UP)
	if mtu > 0 {
		body = appendAttr(body, unix.IFLA_MTU, ne.AppendUint32(nil, uint32(mtu)))
		body = appendAttr(body, unix.IFLA_TXQLEN, ne.AppendUint32(nil, txQueueLen))
	}
	_, err := c.do(unix.RTM_NEWLINK, 0, body)
	return err
}

// addAddr adds prefix's address to an interface with an on-link route for
// the prefix. IPv6 addresses skip duplicate address detection (IFA_F_NODAD)
// so they are usable at once instead of staying tentative for a second.
func (c *rtnl) addAddr(index int, prefix netip.Prefix) error {
	family, flags := uint8(unix.AF_INET), uint32(0)
	if prefix.Addr().Is6() {
		family, flags = unix.AF_INET6, unix.IFA_F_NODAD
	}
	addr := prefix.Addr().AsSlice()
	body := []byte{family, uint8(prefix.Bits()), uint8(flags), unix.RT_SCOPE_UNIVERSE}
	body = ne.AppendUint32(body, uint32(index))
	body = appendAttr(body, unix.IFA_LOCAL, addr)
	body = appendAttr(body, unix.IFA_ADDRESS, addr)
	body = appendAttr(body, unix.IFA_FLAGS, ne.AppendUint32(nil, flags))
	_, err := c.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
	return err
}

// ifInfomsg encodes struct ifinfomsg.
func ifInfomsg(index int, flags, change uint32) []byte {
	b := make([]byte, 0, unix.SizeofIfInfomsg)
	b = append(b, unix.AF_UNSPEC, 0)
	b = ne.AppendUint16(b, 0)
	b = ne.AppendUint32(b, uint32(int32(index)))
	b = ne.AppendUint32(b, flags)
	return ne.AppendUint32(b, change)
}

// appendAttr appends one rtattr, padded to four bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = ne.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = ne.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// parseAttrs splits a run of rtattrs by type (nested flags masked off);
// malformed trailing bytes are ignored.
func parseAttrs(b []byte) map[uint16][]byte {
	attrs := make(map[uint16][]byte)
	for len(b) >= unix.SizeofRtAttr {
		l := int(ne.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			break
		}
		attrs[ne.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)] = b[unix.SizeofRtAttr:l]
		l = (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return attrs
}

// configureLink sets MTU, brings the interface up and adds cfg's host
// addresses.
func configureLink(c *rtnl, index int, cfg Config) error {
	if err := c.setLinkUp(index, cfg.MTU); err != nil {
		return fmt.Errorf("set link up, mtu %d: %w", cfg.MTU, err)
	}
	for _, p := range []netip.Prefix{cfg.HostPrefix4, cfg.HostPrefix6} {
		if !p.IsValid() {
			continue
		}
		if err := c.addAddr(index, p); err != nil {
			if p.Addr().Is6() && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EAFNOSUPPORT)) {
				// Not a missing capability: the kernel refuses IPv6 on the link.
				return fmt.Errorf("add address %s: %w: IPv6 is disabled on this link (disable_ipv6=1): pass --no-ipv6", p, err)
			}
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	return nil
}

// bringUpLoopback brings lo up, which a fresh network namespace leaves down.
func bringUpLoopback() error {
	c, err := openRtnl()
	if err != nil {
		return err
	}
	defer c.Close()
	lo, err := c.linkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := c.setLinkUp(lo.index, 0); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}
