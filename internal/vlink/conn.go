package vlink

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// listenBacklog is the peer's accept queue length.
const listenBacklog = 128

// Conn is one TCP endpoint of a Pair, dialled by the client (Pair.Dial) or
// accepted by the peer (Listener.Accept). Every method returns at once: an
// operation that would block returns an error matching ErrWouldBlock, and the
// driver lets virtual time pass (Pair.Step) before trying again. Deadlines
// are deliberately absent: gonet's use real timers, which would fire in wall
// time, not in virtual time.
//
// Errors are *OpError values carrying the Linux errno name; reading past a
// FIN returns io.EOF. Like a socket, the connection's fatal error (ETIMEDOUT,
// ECONNRESET, ...) is reported once by gVisor: Conn remembers the first one
// any method saw, and Err returns it.
type Conn struct {
	p   *Pair
	ep  tcpip.Endpoint
	wq  *waiter.Queue
	err error
}

// Dial starts connecting a client socket to addr (an IPv4 or IPv6 address,
// normally PeerAddr4 or PeerAddr6) and port, and returns at once with the
// SYN on the wire: the handshake completes as virtual time runs (Established
// turns true, or Err reports ECONNREFUSED or ETIMEDOUT). Local ports are
// handed out in order from 49152, so runs are reproducible.
func (p *Pair) Dial(addr string, port uint16) (*Conn, error) {
	if p.closed {
		return nil, fmt.Errorf("dial %s: %w", addr, errClosed)
	}
	dst, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("dial: parse address %q: %w", addr, err)
	}
	proto, local := header.IPv4ProtocolNumber, ClientAddr4
	if dst.Is6() && !dst.Is4In6() {
		proto, local = header.IPv6ProtocolNumber, ClientAddr6
	}
	dst = dst.Unmap()
	wq := new(waiter.Queue)
	ep, terr := p.Client.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, opError("socket", terr))
	}
	if err := p.bindClient(ep, local); err != nil {
		ep.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	terr = ep.Connect(tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(dst.AsSlice()), Port: port})
	if _, started := terr.(*tcpip.ErrConnectStarted); terr != nil && !started {
		ep.Close()
		return nil, fmt.Errorf("dial %s port %d: %w", addr, port, opError("connect", terr))
	}
	return &Conn{p: p, ep: ep, wq: wq}, nil
}

// bindClient binds ep to local and the next free port in the client's range.
func (p *Pair) bindClient(ep tcpip.Endpoint, local netip.Addr) error {
	for range 1 << 14 {
		port := p.nextPort
		p.nextPort++
		if p.nextPort == 0 {
			p.nextPort = firstClientPort
		}
		terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(local.AsSlice()), Port: port})
		switch terr.(type) {
		case nil:
			return nil
		case *tcpip.ErrPortInUse:
			continue
		}
		return opError("bind", terr)
	}
	return opError("bind", &tcpip.ErrNoPortAvailable{})
}

// Connect dials and runs virtual time until the handshake completes or fails
// (ECONNREFUSED, ETIMEDOUT), or limit passes. On failure the socket is closed.
func (p *Pair) Connect(addr string, port uint16, limit time.Duration) (*Conn, error) {
	c, err := p.Dial(addr, port)
	if err != nil {
		return nil, err
	}
	err = p.RunUntil(func() bool { return c.Established() || c.Err() != nil }, limit)
	if err == nil {
		err = c.Err()
	}
	if err != nil {
		c.Abort()
		return nil, fmt.Errorf("connect %s port %d: %w", addr, port, err)
	}
	return c, nil
}

// Write queues as much of b as the send buffer takes and returns how much
// that was: possibly less than len(b) without an error, as a non-blocking
// send(2) does. It returns ErrWouldBlock when the buffer is full (or the
// handshake is still running) and EPIPE after the socket was shut down.
func (c *Conn) Write(b []byte) (int, error) {
	var r bytes.Reader
	r.Reset(b)
	n, terr := c.ep.Write(&r, tcpip.WriteOptions{})
	if terr != nil {
		return int(n), c.fail("write", terr)
	}
	return int(n), nil
}

// Read copies received data into b. It returns ErrWouldBlock when nothing
// has arrived yet and io.EOF once the other side's FIN has been read.
func (c *Conn) Read(b []byte) (int, error) {
	w := tcpip.SliceWriter(b)
	res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
	if terr != nil {
		if _, eof := terr.(*tcpip.ErrClosedForReceive); eof {
			return 0, io.EOF
		}
		return 0, c.fail("read", terr)
	}
	if res.Count > 0 {
		c.ep.ModerateRecvBuf(res.Count)
	}
	return res.Count, nil
}

// fail wraps terr and remembers it if it is the connection's fatal error.
func (c *Conn) fail(op string, terr tcpip.Error) error {
	err := opError(op, terr)
	switch err.Errno {
	case EAGAIN, EPIPE, ENOTCONN:
		// Not the connection's fate: retry, or a consequence of it.
	default:
		if c.err == nil {
			c.err = err
		}
	}
	return err
}

// Err returns the error that ended the connection (ETIMEDOUT, ECONNRESET,
// ECONNREFUSED, ...) or nil while it is alive or closed cleanly. It never
// blocks and never changes what the other methods return, except that
// gVisor, like a socket's SO_ERROR, reports the error only once: if no
// method has seen it yet, Err collects it, and a later Write then fails with
// EPIPE as it would on Linux after getsockopt(SO_ERROR).
func (c *Conn) Err() error {
	if c.err == nil && tcp.EndpointState(c.ep.State()) == tcp.StateError {
		if terr := c.ep.LastError(); terr != nil {
			c.err = opError("connection", terr)
		}
	}
	return c.err
}

// State returns the TCP state as gVisor names it: "SYN-SENT",
// "ESTABLISHED", "FIN-WAIT1", "CLOSED", "ERROR", ...
func (c *Conn) State() string { return tcp.EndpointState(c.ep.State()).String() }

// Established reports whether the connection is synchronized: the handshake
// completed and the connection is not closed, including the closing states
// in which data may still flow (CLOSE-WAIT, FIN-WAIT1, ...).
func (c *Conn) Established() bool {
	switch tcp.EndpointState(c.ep.State()) {
	case tcp.StateEstablished, tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateTimeWait,
		tcp.StateCloseWait, tcp.StateLastAck, tcp.StateClosing:
		return true
	}
	return false
}

// Info returns gVisor's view of the connection: state, RTT, RTO, cwnd,
// retransmission state (tcp_info).
func (c *Conn) Info() tcpip.TCPInfoOption {
	var info tcpip.TCPInfoOption
	c.ep.GetSockOpt(&info)
	return info
}

// Stats returns the connection's own counters (segments, retransmits,
// timeouts).
func (c *Conn) Stats() *tcp.Stats { return c.ep.Stats().(*tcp.Stats) }

// Unread returns the bytes received and not read yet.
func (c *Conn) Unread() int {
	n, _ := c.ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
	return n
}

// SetUserTimeout sets TCP_USER_TIMEOUT: how long written data may stay
// unacknowledged before the connection fails with ETIMEDOUT (0 = off).
func (c *Conn) SetUserTimeout(d time.Duration) error {
	opt := tcpip.TCPUserTimeoutOption(d)
	if terr := c.ep.SetSockOpt(&opt); terr != nil {
		return opError("setsockopt TCP_USER_TIMEOUT", terr)
	}
	return nil
}

// SetKeepalive turns keepalive on with TCP_KEEPIDLE idle, TCP_KEEPINTVL
// intvl and TCP_KEEPCNT cnt; zero values keep gVisor's defaults
// (2 h, 75 s, 9).
func (c *Conn) SetKeepalive(idle, intvl time.Duration, cnt int) error {
	if idle > 0 {
		opt := tcpip.KeepaliveIdleOption(idle)
		if terr := c.ep.SetSockOpt(&opt); terr != nil {
			return opError("setsockopt TCP_KEEPIDLE", terr)
		}
	}
	if intvl > 0 {
		opt := tcpip.KeepaliveIntervalOption(intvl)
		if terr := c.ep.SetSockOpt(&opt); terr != nil {
			return opError("setsockopt TCP_KEEPINTVL", terr)
		}
	}
	if cnt > 0 {
		if terr := c.ep.SetSockOptInt(tcpip.KeepaliveCountOption, cnt); terr != nil {
			return opError("setsockopt TCP_KEEPCNT", terr)
		}
	}
	c.ep.SocketOptions().SetKeepAlive(true)
	return nil
}

// SetNoDelay sets TCP_NODELAY (gVisor's default is off, like Linux).
func (c *Conn) SetNoDelay(on bool) { c.ep.SocketOptions().SetDelayOption(!on) }

// SetSendBuffer sets SO_SNDBUF in bytes (gVisor clamps it to its limits).
func (c *Conn) SetSendBuffer(n int) { c.ep.SocketOptions().SetSendBufferSize(int64(n), true) }

// SetReceiveBuffer sets SO_RCVBUF in bytes (gVisor clamps it to its limits);
// a small receive buffer and a reader that does not read close the window.
func (c *Conn) SetReceiveBuffer(n int) { c.ep.SocketOptions().SetReceiveBufferSize(int64(n), true) }

// CloseWrite sends FIN after the queued data (shutdown(SHUT_WR)).
func (c *Conn) CloseWrite() error {
	if terr := c.ep.Shutdown(tcpip.ShutdownWrite); terr != nil {
		return c.fail("shutdown", terr)
	}
	return nil
}

// Close closes the socket as close(2) does: FIN after the queued data, or RST
// if received data was left unread. The connection lives on in the stack
// through its closing states.
func (c *Conn) Close() { c.ep.Close() }

// Abort resets the connection (RST, like close(2) with SO_LINGER 0) and
// forgets it; with the RST dropped, the other side is left half-open.
func (c *Conn) Abort() { c.ep.Abort() }

// LocalAddr returns the socket's address and port.
func (c *Conn) LocalAddr() netip.AddrPort {
	a, _ := c.ep.GetLocalAddress()
	return addrPort(a)
}

// RemoteAddr returns the address and port of the other side.
func (c *Conn) RemoteAddr() netip.AddrPort {
	a, _ := c.ep.GetRemoteAddress()
	return addrPort(a)
}

// Endpoint returns the underlying gVisor endpoint for options Conn does not
// cover. Blocking on its waiter queue would stall virtual time.
func (c *Conn) Endpoint() tcpip.Endpoint { return c.ep }

func addrPort(a tcpip.FullAddress) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.Addr.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), a.Port)
}

// Listener is a listening socket on the peer, on both of its addresses.
type Listener struct {
	p    *Pair
	port uint16
	eps  []tcpip.Endpoint // IPv4 then IPv6
}

// Listen opens a listening socket on the peer's IPv4 and IPv6 addresses.
func (p *Pair) Listen(port uint16) (*Listener, error) {
	if p.closed {
		return nil, fmt.Errorf("listen on port %d: %w", port, errClosed)
	}
	l := &Listener{p: p, port: port}
	for _, proto := range []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber} {
		ep, err := p.listenOn(proto, port)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on port %d: %w", port, err)
		}
		l.eps = append(l.eps, ep)
	}
	return l, nil
}

func (p *Pair) listenOn(proto tcpip.NetworkProtocolNumber, port uint16) (tcpip.Endpoint, error) {
	ep, terr := p.Peer.NewEndpoint(tcp.ProtocolNumber, proto, new(waiter.Queue))
	if terr != nil {
		return nil, opError("socket", terr)
	}
	if proto == header.IPv6ProtocolNumber {
		ep.SocketOptions().SetV6Only(true) // the IPv4 endpoint has the v4 side
	}
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Port: port}); terr != nil {
		ep.Close()
		return nil, opError("bind", terr)
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, opError("listen", terr)
	}
	return ep, nil
}

// Port returns the port the listener is bound to.
func (l *Listener) Port() uint16 { return l.port }

// Accept returns the next connection whose handshake has completed, or
// ErrWouldBlock when there is none yet.
func (l *Listener) Accept() (*Conn, error) {
	for _, ep := range l.eps {
		nep, wq, terr := ep.Accept(nil)
		switch terr.(type) {
		case nil:
			return &Conn{p: l.p, ep: nep, wq: wq}, nil
		case *tcpip.ErrWouldBlock:
			continue
		}
		return nil, opError("accept", terr)
	}
	return nil, opError("accept", &tcpip.ErrWouldBlock{})
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() {
	for _, ep := range l.eps {
		ep.Close()
	}
	l.eps = nil
}
