package services

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The harness joins two gVisor stacks with an in-memory link: a client at
// 198.18.0.1 / fd00:198:18::1 and a peer at 198.18.0.2 / fd00:198:18::2, the
// same addressing as unplug's TUN network. Each side has a channel.Endpoint;
// one goroutine per direction moves packets from one endpoint's outbound
// queue into the other's inbound path, like a TUN device's read loop.

const harnessNIC tcpip.NICID = 1

const (
	harnessMTU = 1500
	// harnessQueue is the per-direction packet queue; a full queue drops,
	// like a real link.
	harnessQueue = 1024
)

var (
	clientV4 = tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
	peerV4   = tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
	clientV6 = tcpip.AddrFrom16([16]byte{0xfd, 0x00, 0x01, 0x98, 0x00, 0x18, 15: 0x01})
	peerV6   = tcpip.AddrFrom16([16]byte{0xfd, 0x00, 0x01, 0x98, 0x00, 0x18, 15: 0x02})
)

// harness is a client stack and a peer stack joined by a link.
type harness struct {
	client, peer *stack.Stack
}

// newHarness builds both stacks and the link; t.Cleanup tears them down
// (pumps first, then the stacks), after any cleanup registered later.
func newHarness(t *testing.T) *harness {
	t.Helper()
	clientEP := channel.New(harnessQueue, harnessMTU, "")
	peerEP := channel.New(harnessQueue, harnessMTU, "")
	h := &harness{
		client: newTestStack(t, clientEP, clientV4, clientV6),
		peer:   newTestStack(t, peerEP, peerV4, peerV6),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go pump(ctx, &wg, clientEP, peerEP)
	go pump(ctx, &wg, peerEP, clientEP)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		h.client.Destroy()
		h.peer.Destroy()
	})
	return h
}

// newTestStack builds a stack with IPv4, IPv6 and TCP on ep, with the given
// addresses and default routes through it.
func newTestStack(t *testing.T, ep stack.LinkEndpoint, v4, v6 tcpip.Address) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := s.CreateNIC(harnessNIC, ep); err != nil {
		t.Fatalf("create NIC: %s", err)
	}
	for _, a := range []tcpip.AddressWithPrefix{{Address: v4, PrefixLen: 24}, {Address: v6, PrefixLen: 64}} {
		proto := header.IPv4ProtocolNumber
		if a.Address.Len() == header.IPv6AddressSize {
			proto = header.IPv6ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: a}
		if err := s.AddProtocolAddress(harnessNIC, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("add address %s: %s", a, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: harnessNIC},
		{Destination: header.IPv6EmptySubnet, NIC: harnessNIC},
	})
	return s
}

// pump moves packets written by from's stack into to's stack until ctx ends.
func pump(ctx context.Context, wg *sync.WaitGroup, from, to *channel.Endpoint) {
	defer wg.Done()
	for {
		pkt := from.ReadContext(ctx)
		if pkt == nil {
			return
		}
		// A fresh buffer without the sender's parsed headers, as a TUN
		// read would produce.
		in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
		proto := pkt.NetworkProtocolNumber
		pkt.DecRef()
		to.InjectInbound(proto, in)
		in.DecRef()
	}
}

// clientConn is a client-side connection that keeps its gVisor endpoint, so
// tests can reset it.
type clientConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

// reset closes c with an RST (SO_LINGER 0).
func (c *clientConn) reset() {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	c.Close()
}

// dialPeer connects from the client stack to the peer at addr:port.
func dialPeer(h *harness, addr tcpip.Address, port uint16) (*clientConn, error) {
	proto := header.IPv4ProtocolNumber
	if addr.Len() == header.IPv6AddressSize {
		proto = header.IPv6ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := h.client.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("new endpoint: %s", terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(tcpip.FullAddress{NIC: harnessNIC, Addr: addr, Port: port})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-notify:
		case <-time.After(10 * time.Second):
			ep.Close()
			return nil, errors.New("connect: timed out")
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, fmt.Errorf("connect: %s", terr)
	}
	return &clientConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

// dial connects to the peer at addr:port, failing the test on error, and
// closes the connection at cleanup.
func (h *harness) dial(t *testing.T, addr tcpip.Address, port uint16) *clientConn {
	t.Helper()
	c, err := dialPeer(h, addr, port)
	if err != nil {
		t.Fatalf("dial %s port %d: %v", addr, port, err)
	}
	// A deadline turns a hang (a bug) into a failure; it is no assertion.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// start runs services on the peer stack and closes them at cleanup.
func (h *harness) start(t *testing.T, cfg Config) *Set {
	t.Helper()
	if cfg.Addrs == nil {
		cfg.Addrs = []tcpip.Address{peerV4, peerV6}
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	set, err := Start(context.Background(), h.peer, harnessNIC, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { set.Close() })
	return set
}

// waitFor blocks until cond holds, re-checking whenever a connection of set
// is accepted or finishes; it fails the test after a generous bound.
func waitFor(t *testing.T, set *Set, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for {
		set.mu.Lock()
		changed := set.changed
		set.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// statsOf returns the stats of the service named name on port.
func statsOf(t *testing.T, set *Set, name string, port uint16) ServiceStats {
	t.Helper()
	for _, st := range set.Stats() {
		if st.Service == name && st.Port == port {
			return st
		}
	}
	t.Fatalf("no stats for %s on port %d in %+v", name, port, set.Stats())
	return ServiceStats{}
}
