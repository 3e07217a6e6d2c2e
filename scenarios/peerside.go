package scenarios

import (
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// peerServices are the peer's services in every scenario, on their usual
// ports. Addresses are left to stack.New.
func peerServices() services.Config {
	return services.Config{
		HTTP:    services.DefaultHTTPPort,
		Echo:    services.DefaultEchoPort,
		Discard: services.DefaultDiscardPort,
		Sink:    services.DefaultSinkPort,
		Source:  services.DefaultSourcePort,
	}
}

// peerSide implements the parts of Env that only concern the peer — fault
// rules, the clock, PeerControl — on a stack.Peer. The real environment
// embeds it; the virtual one can too.
type peerSide struct {
	peer *stack.Peer
	rec  *recorder
}

// AddFault implements Env.
func (e *peerSide) AddFault(spec string) (int, error) {
	return e.peer.Controller().AddString(spec)
}

// RemoveFault implements Env.
func (e *peerSide) RemoveFault(id int) error { return e.peer.Controller().Remove(id) }

// Faults implements Env.
func (e *peerSide) Faults() *fault.Controller { return e.peer.Controller() }

// Now implements Env: the recorder's clock, so that the report and the
// scenario agree on every time.
func (e *peerSide) Now() time.Duration { return e.rec.Now() }

// Peer implements Env.
func (e *peerSide) Peer() PeerControl { return peerControl{e.peer} }

// Note implements Env. Run wraps every environment in one that records
// notes, so the environment itself has nothing to do.
func (e *peerSide) Note(kind, format string, args ...any) {}

// peerControl implements PeerControl on a stack.Peer.
type peerControl struct{ peer *stack.Peer }

// connected reports whether a TCP endpoint holds a connection (not a
// listener, not yet or no longer connected).
func connected(ep *tcp.Endpoint) bool {
	switch tcp.EndpointState(ep.State()) {
	case tcp.StateInitial, tcp.StateBound, tcp.StateListen, tcp.StateConnecting, tcp.StateClose, tcp.StateError:
		return false
	}
	return true
}

// Forget implements PeerControl: with a temporary rule dropping everything
// the peer sends, it aborts each of the peer's connections — gVisor sends
// an RST, which the rule eats — then removes the rule. The peer has no
// record of the connections left, so it answers the client's next segment
// with an RST. Abort writes its RST synchronously, so the rule can go as
// soon as the aborts return.
func (pc peerControl) Forget() (int, error) {
	ctl := pc.peer.Controller()
	id := ctl.Add(fault.Spec{Action: fault.ActDrop, Dir: packet.Out})
	defer ctl.Remove(id)
	return services.Forget(pc.peer.Stack), nil
}

// Accepted implements PeerControl.
func (pc peerControl) Accepted(port uint16) int {
	n := 0
	for _, st := range pc.peer.Services.Stats() {
		if st.Port == port {
			n += int(st.Accepted)
		}
	}
	return n
}

// Received implements PeerControl.
func (pc peerControl) Received(port uint16) int64 {
	var n int64
	for _, st := range pc.peer.Services.Stats() {
		if st.Port == port {
			n += int64(st.BytesIn)
		}
	}
	return n
}

// Conns implements PeerControl.
func (pc peerControl) Conns(port uint16) []stack.ConnStatus { return connsOnPort(pc.peer.Stack, port) }

// connsOnPort lists the TCP connections of s whose local port is port.
func connsOnPort(s *gstack.Stack, port uint16) []stack.ConnStatus {
	var out []stack.ConnStatus
	for _, c := range stack.Conns(s) {
		if ap, err := netip.ParseAddrPort(c.Local); err == nil && ap.Port() == port {
			out = append(out, c)
		}
	}
	return out
}

// SetUserTimeout implements PeerControl.
func (pc peerControl) SetUserTimeout(port uint16, d time.Duration) (int, error) {
	n := 0
	for _, te := range pc.peer.Stack.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok || !connected(ep) {
			continue
		}
		if info, ok := ep.Info().(*gstack.TransportEndpointInfo); !ok || info.ID.LocalPort != port {
			continue
		}
		opt := tcpip.TCPUserTimeoutOption(d)
		if err := ep.SetSockOpt(&opt); err != nil {
			return n, fmt.Errorf("set the peer's user timeout: %s", err)
		}
		n++
	}
	return n, nil
}
