package services

import (
	"net/netip"
	"sort"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// StackConn is one TCP connection of a gVisor stack, as `unplug status` and
// the virtual-time stepper show it.
type StackConn struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
	TCPInfo
}

// StackConns lists the TCP connections of s (not listeners, not unbound
// endpoints), sorted by local then remote address, whether or not a
// service owns them: the peer's and the virtual client's alike.
func StackConns(s *stack.Stack) []StackConn {
	var out []StackConn
	for _, te := range s.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		switch tcp.EndpointState(ep.State()) {
		case tcp.StateListen, tcp.StateInitial, tcp.StateBound:
			continue
		}
		id := ep.Info().(*stack.TransportEndpointInfo).ID
		out = append(out, StackConn{
			Local:   endString(id.LocalAddress, id.LocalPort),
			Remote:  endString(id.RemoteAddress, id.RemotePort),
			TCPInfo: EndpointTCPInfo(ep),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Local != out[j].Local {
			return out[i].Local < out[j].Local
		}
		return out[i].Remote < out[j].Remote
	})
	return out
}

// endString writes one end of a connection as HOST:PORT, IPv4-mapped
// addresses unmapped.
func endString(a tcpip.Address, port uint16) string {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port).String()
}
