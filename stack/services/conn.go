package services

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// conn is one accepted connection: the gonet wrapper used for I/O plus the
// endpoint underneath it, kept for TCP info and resets.
type conn struct {
	id      uint64 // order of acceptance, set under Set.mu
	svc     *service
	nc      *gonet.TCPConn
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	local   netip.AddrPort
	remote  netip.AddrPort
	started time.Time

	in, out atomic.Uint64

	closeOnce sync.Once
	mu        sync.Mutex
	aborted   bool
	upstream  net.Conn // forwards only

	pacer *connPacer // slow-reader persona; nil otherwise
}

func newConn(svc *service, ep tcpip.Endpoint, wq *waiter.Queue, peer tcpip.FullAddress) *conn {
	c := &conn{
		svc:     svc,
		nc:      gonet.NewTCPConn(wq, ep),
		ep:      ep,
		wq:      wq,
		remote:  addrPort(peer),
		started: time.Now(),
	}
	if local, err := ep.GetLocalAddress(); err == nil {
		c.local = addrPort(local)
	}
	return c
}

// Read reads from the client, counting the bytes.
func (c *conn) Read(p []byte) (int, error) {
	if c.pacer != nil {
		p = c.pacer.limit(p)
	}
	n, err := c.nc.Read(p)
	if c.pacer != nil {
		c.pacer.took(n)
	}
	c.in.Add(uint64(n))
	c.svc.bytesIn.Add(uint64(n))
	return n, err
}

// Write writes to the client, counting the bytes.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	c.out.Add(uint64(n))
	c.svc.bytesOut.Add(uint64(n))
	return n, err
}

// CloseWrite sends a FIN to the client.
func (c *conn) CloseWrite() error { return c.nc.CloseWrite() }

// close closes the connection gracefully (FIN), and the forward's upstream.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.nc.Close()
		c.mu.Lock()
		up := c.upstream
		c.mu.Unlock()
		if up != nil {
			up.Close()
		}
	})
}

// abort resets the connection (RST, like SO_LINGER 0), wakes any goroutine
// blocked on it, and closes the forward's upstream the same way.
func (c *conn) abort() {
	c.mu.Lock()
	c.aborted = true
	up := c.upstream
	c.mu.Unlock()
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	c.nc.SetDeadline(time.Unix(1, 0))
	if tc, ok := up.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.close()
}

// setUpstream attaches a forward's upstream connection. It returns false,
// and the caller must close up, when c was already aborted.
func (c *conn) setUpstream(up net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return false
	}
	c.upstream = up
	return true
}

// ConnInfo describes one open connection to a service.
type ConnInfo struct {
	// Service is the name of the service that accepted it.
	Service string `json:"service"`
	// Target is the forward's upstream (HOST:PORT); empty for built-ins.
	Target string `json:"target,omitempty"`
	// Local is the peer's address and port (198.18.0.2:80).
	Local netip.AddrPort `json:"local"`
	// Remote is the client's address and port.
	Remote netip.AddrPort `json:"remote"`
	// Started is when the connection was accepted (wall clock).
	Started time.Time `json:"started"`
	// BytesIn counts bytes read from the client.
	BytesIn uint64 `json:"bytes_in"`
	// BytesOut counts bytes written to the client.
	BytesOut uint64 `json:"bytes_out"`
	// TCP is gVisor's view of the connection.
	TCP TCPInfo `json:"tcp"`
}

// TCPInfo is gVisor's per-connection TCP state: tcpip.TCPInfoOption plus the
// endpoint's segment and retransmission counters, in JSON-friendly form.
type TCPInfo struct {
	// State is the TCP state as gVisor names it: ESTABLISHED, CLOSE-WAIT,
	// FIN-WAIT1, ... (internal states are reported as CLOSED).
	State string `json:"state"`
	// RTT is the smoothed round-trip time; 0 before the first sample.
	RTT time.Duration `json:"rtt_ns"`
	// RTTVar is the round-trip time variation.
	RTTVar time.Duration `json:"rttvar_ns"`
	// RTO is the current retransmission timeout, doubled by each backoff.
	RTO time.Duration `json:"rto_ns"`
	// CongestionState is open, rto-recovery, fast-recovery, sack-recovery or
	// disorder.
	CongestionState string `json:"ca_state"`
	// SndCwnd is the congestion window, in segments.
	SndCwnd uint32 `json:"snd_cwnd"`
	// SndSsthresh is the slow-start threshold, in segments.
	SndSsthresh uint32 `json:"snd_ssthresh"`
	// ReorderSeen reports whether reordering was detected.
	ReorderSeen bool `json:"reorder_seen"`
	// SegmentsSent and SegmentsReceived count segments on this connection.
	SegmentsSent     uint64 `json:"segs_out"`
	SegmentsReceived uint64 `json:"segs_in"`
	// Retransmits counts retransmitted segments; FastRetransmits those sent
	// in fast recovery; Timeouts the RTO expirations.
	Retransmits     uint64 `json:"retransmits"`
	FastRetransmits uint64 `json:"fast_retransmits"`
	Timeouts        uint64 `json:"timeouts"`
}

// info snapshots c.
func (c *conn) info() ConnInfo {
	return ConnInfo{
		Service:  c.svc.name,
		Target:   c.svc.target,
		Local:    c.local,
		Remote:   c.remote,
		Started:  c.started,
		BytesIn:  c.in.Load(),
		BytesOut: c.out.Load(),
		TCP:      EndpointTCPInfo(c.ep),
	}
}

// EndpointTCPInfo reads gVisor's TCP info and counters from ep: what
// `unplug status` and the stepper show for any connection.
func EndpointTCPInfo(ep tcpip.Endpoint) TCPInfo {
	var ti tcpip.TCPInfoOption
	if err := ep.GetSockOpt(&ti); err != nil {
		return TCPInfo{State: "UNKNOWN"}
	}
	info := TCPInfo{
		State:           stateName(ti.State),
		RTT:             ti.RTT,
		RTTVar:          ti.RTTVar,
		RTO:             ti.RTO,
		CongestionState: ccStateName(ti.CcState),
		SndCwnd:         ti.SndCwnd,
		SndSsthresh:     ti.SndSsthresh,
		ReorderSeen:     ti.ReorderSeen,
	}
	if st, ok := ep.Stats().(*tcp.Stats); ok {
		info.SegmentsSent = st.SegmentsSent.Value()
		info.SegmentsReceived = st.SegmentsReceived.Value()
		info.Retransmits = st.SendErrors.Retransmits.Value()
		info.FastRetransmits = st.SendErrors.FastRetransmit.Value()
		info.Timeouts = st.SendErrors.Timeouts.Value()
	}
	return info
}

// stateName names a TCP state; tcp.EndpointState.String panics on values it
// does not know, so guard the range.
func stateName(s tcpip.EndpointState) string {
	if es := tcp.EndpointState(s); es >= tcp.StateEstablished && es <= tcp.StateError {
		return es.String()
	}
	return "UNKNOWN"
}

// ccStateName names a congestion-control state.
func ccStateName(s tcpip.CongestionControlState) string {
	switch s {
	case tcpip.Open:
		return "open"
	case tcpip.RTORecovery:
		return "rto-recovery"
	case tcpip.FastRecovery:
		return "fast-recovery"
	case tcpip.SACKRecovery:
		return "sack-recovery"
	case tcpip.Disorder:
		return "disorder"
	}
	return "unknown"
}

// addrPort converts a gVisor address to its net/netip form.
func addrPort(a tcpip.FullAddress) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.Addr.AsSlice())
	return netip.AddrPortFrom(ip, a.Port)
}
