package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dial connects to address (a literal "ip:port"; no name resolution) from
// inside the namespace, so the connection runs over the host kernel's TCP
// (or UDP) stack and the TUN. network is "tcp", "tcp4", "tcp6", "udp",
// "udp4" or "udp6". control, if not nil, runs on the socket before connect,
// for options such as TCP_USER_TIMEOUT or keepalive. ctx bounds the
// connect only.
func (ns *Namespace) Dial(ctx context.Context, network, address string, control func(fd uintptr) error) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	domain, typ, err := socketKind(network, ap.Addr())
	if err != nil {
		return nil, err
	}
	f, err := ns.Socket(domain, typ, 0)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	defer f.Close()
	if err := connectFile(ctx, f, ap, control); err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	// net.FileConn turns on Go's own TCP defaults (keepalive every 15 s,
	// TCP_NODELAY), which would overwrite what control set and give the
	// connection a heartbeat the caller never asked for: keep the socket's
	// own settings.
	saved, err := saveTCPOptions(f, typ)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	if err := saved.restore(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	return c, nil
}

// tcpOption is one integer socket option.
type tcpOption struct{ level, opt int }

// goTCPDefaults are the options net.FileConn sets on a TCP socket.
var goTCPDefaults = []tcpOption{
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
	{unix.IPPROTO_TCP, unix.TCP_NODELAY},
}

// tcpOptions are the values of goTCPDefaults on one socket (nil for UDP).
type tcpOptions []int

// saveTCPOptions reads goTCPDefaults from f, a TCP socket (typ
// SOCK_STREAM); it saves nothing for other types.
func saveTCPOptions(f *os.File, typ int) (tcpOptions, error) {
	if typ != unix.SOCK_STREAM {
		return nil, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	vals := make(tcpOptions, len(goTCPDefaults))
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		for i, o := range goTCPDefaults {
			if vals[i], gerr = unix.GetsockoptInt(int(fd), o.level, o.opt); gerr != nil {
				return
			}
		}
	}); err != nil {
		return nil, err
	}
	if gerr != nil {
		return nil, fmt.Errorf("read socket options: %w", gerr)
	}
	return vals, nil
}

// restore writes the saved options back onto c.
func (vals tcpOptions) restore(c net.Conn) error {
	if vals == nil {
		return nil
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for i, o := range goTCPDefaults {
			if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, vals[i]); serr != nil {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("restore socket options: %w", serr)
	}
	return nil
}

// socketKind picks the address family and socket type for network.
func socketKind(network string, addr netip.Addr) (domain, typ int, err error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		typ = unix.SOCK_STREAM
	case "udp", "udp4", "udp6":
		typ = unix.SOCK_DGRAM
	default:
		return 0, 0, fmt.Errorf("dial: unsupported network %q", network)
	}
	is4 := addr.Unmap().Is4()
	switch last := network[len(network)-1]; {
	case last == '4' && !is4, last == '6' && is4:
		return 0, 0, fmt.Errorf("dial %s: address %s is of the wrong family", network, addr)
	case is4:
		return unix.AF_INET, typ, nil
	default:
		return unix.AF_INET6, typ, nil
	}
}

// connectFile runs control and a non-blocking connect on f, waiting for
// the handshake through Go's poller.
func connectFile(ctx context.Context, f *os.File, ap netip.AddrPort, control func(uintptr) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		if control != nil {
			if cerr = control(fd); cerr != nil {
				return
			}
		}
		cerr = unix.Connect(int(fd), sockaddr(ap))
	}); err != nil {
		return err
	}
	if !errors.Is(cerr, unix.EINPROGRESS) {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Write(func(fd uintptr) bool {
		cerr = connectResult(int(fd))
		return !errors.Is(cerr, unix.EINPROGRESS)
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	f.SetWriteDeadline(time.Time{})
	return cerr
}

// connectResult reports EINPROGRESS while the handshake is pending, nil
// once connected, or the connect error.
func connectResult(fd int) error {
	if _, err := unix.Getpeername(fd); err == nil {
		return nil
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return syscall.Errno(soerr)
	}
	return unix.EINPROGRESS
}

// sockaddr converts ap for connect.
func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr().Unmap(); a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
