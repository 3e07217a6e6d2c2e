package stack

import (
	"context"
	"errors"
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
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	logf func(format string, args ...any)
	wg   sync.WaitGroup

	mu  sync.Mutex
	ups map[net.Conn]struct{} // both ends of every splice, closed on stop
	// dials are the dials in progress; stop cancels them, so Close never
	// waits for an upstream that does not answer.
	dials  map[*dialing]struct{}
	closed bool
}

// dialing is one dial in progress: what stop calls to cancel it.
type dialing struct{ cancel context.CancelFunc }

// maxPendingHandshakes bounds connections being dialed at once.
const maxPendingHandshakes = 1024

func (p *Peer) enableTransparent(dial func(context.Context, string, string) (net.Conn, error), logf func(string, ...any)) error {
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
	t := &transparent{dial: dial, logf: logf, ups: map[net.Conn]struct{}{}, dials: map[*dialing]struct{}{}}
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
		up, err := t.redial(target)
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

// redial dials target; stop cancels the dial.
func (t *transparent) redial(target string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	d := &dialing{cancel}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		cancel()
		return nil, errors.New("the peer is closing")
	}
	t.dials[d] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.dials, d)
		t.mu.Unlock()
		cancel()
	}()
	return t.dial(ctx, "tcp", target)
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
	t.mu.Lock()
	t.closed = true
	for d := range t.dials {
		d.cancel()
	}
	for c := range t.ups {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}
