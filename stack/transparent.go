package stack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// transparent terminates every TCP connection to any address the peer does
// not serve itself and re-dials its original destination with dial (from
// unplug's own network namespace), splicing the two: an unmodified program
// whose default route is the TUN meets packet-level faults on its real
// upstreams. A failed dial answers the client with an RST.
type transparent struct {
	// ctx bounds the dials; stop cancels it, so Close never waits for a
	// dial to an upstream that does not answer.
	ctx    context.Context
	cancel context.CancelFunc
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	logf   func(format string, args ...any)
	wg     sync.WaitGroup

	mu     sync.Mutex
	ups    map[net.Conn]struct{} // both ends of every splice, closed on stop
	closed bool
}

// maxPendingHandshakes bounds connections being dialed at once.
const maxPendingHandshakes = 1024

func (p *Peer) enableTransparent(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), logf func(string, ...any)) error {
	if err := p.Stack.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("transparent mode: promiscuous NIC: %s", err)
	}
	if err := p.Stack.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("transparent mode: spoofing NIC: %s", err)
	}
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t := &transparent{dial: dial, logf: logf, ups: map[net.Conn]struct{}{}}
	t.ctx, t.cancel = context.WithCancel(ctx)
	p.transparent = t
	fwd := tcp.NewForwarder(p.Stack, 0, maxPendingHandshakes, t.handle)
	p.Stack.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	return nil
}

func (t *transparent) handle(r *tcp.ForwarderRequest) {
	id := r.ID()
	ip, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	target := netip.AddrPortFrom(ip.Unmap(), id.LocalPort).String()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		up, err := t.dial(t.ctx, "tcp", target)
		if err != nil {
			t.logf("transparent: dial %s: %v", target, err)
			r.Complete(true)
			return
		}
		var wq waiter.Queue
		ep, terr := r.CreateEndpoint(&wq)
		if terr != nil {
			r.Complete(true)
			up.Close()
			return
		}
		r.Complete(false)
		down := gonet.NewTCPConn(&wq, ep)
		if !t.track(up, down) {
			ep.Abort()
			up.Close()
			return
		}
		defer t.untrack(up, down)
		splicePair(down, up)
	}()
}

// splicePair copies both ways until both directions end, passing
// half-closes on, then closes both.
func splicePair(a *gonet.TCPConn, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(b, a)
		if cw, ok := b.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		io.Copy(a, b)
		a.CloseWrite()
	}()
	wg.Wait()
	a.Close()
	b.Close()
}

// track registers both ends of a splice, so that stop can close them; it
// returns false once stop has begun.
func (t *transparent) track(conns ...net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	for _, c := range conns {
		t.ups[c] = struct{}{}
	}
	return true
}

func (t *transparent) untrack(conns ...net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range conns {
		delete(t.ups, c)
	}
}

// stop cancels pending dials, closes both ends of every splice (the
// program's side too: its FIN may never come, dropped by a rule or never
// sent by a program that died) and joins the splices.
func (t *transparent) stop() {
	t.cancel()
	t.mu.Lock()
	t.closed = true
	for c := range t.ups {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}
