package scenarios

import (
	"context"
	"time"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
)

// runEnv is the world a scenario runs in: a client that talks to the peer
// across the fault layer, the fault rules, and a clock. Scenarios are written
// once, as straight-line blocking code against runEnv; the real environment
// backs it with kernel sockets in a private network namespace and a TUN, the
// virtual one with a gVisor client on a manual clock, where every blocking
// call advances virtual time until it can return.
type runEnv interface {
	// Kernel reports whether the client is the host kernel's TCP (real
	// mode) rather than a gVisor stack (virtual mode). Expectations differ.
	Kernel() bool
	// Dial connects a client to the peer's port and returns once the peer
	// has accepted the connection (so an outage started next cannot drop
	// the handshake's final ACK). With opts.NoWaitAccept it returns after
	// connect() alone.
	Dial(ctx context.Context, port uint16, opts SockOpts) (envConn, error)
	// AddFault installs a rule on the peer's fault layer; its after= and
	// for= count from now.
	AddFault(spec string) (int, error)
	// RemoveFault removes a rule.
	RemoveFault(id int) error
	// Faults returns the rule controller (for counters).
	Faults() *fault.Controller
	// Sleep lets d pass (in virtual mode: advances the clock by d).
	Sleep(ctx context.Context, d time.Duration) error
	// Now is the time since the scenario started, on the scenario's clock.
	Now() time.Duration
	// SetSysctl sets a per-namespace TCP sysctl for the client
	// (net.ipv4.tcp_retries2 ...). Virtual mode maps the ones it can onto
	// gVisor options and returns an error wrapping errors.ErrUnsupported
	// for the others.
	SetSysctl(name, value string) error
	// Peer gives access to the peer side: its connections and personas.
	Peer() PeerControl
	// Note records a free-form timeline event. Run wraps every
	// environment in one that records notes (and every other call) in the
	// report, so implementations may make it a no-op.
	Note(kind, format string, args ...any)
}

// SockOpts are the client socket options a scenario may set before connect.
type SockOpts struct {
	UserTimeout    time.Duration // TCP_USER_TIMEOUT; 0 = off
	KeepIdle       time.Duration // SO_KEEPALIVE with TCP_KEEPIDLE; 0 = off
	KeepIntvl      time.Duration
	KeepCnt        int
	SndBuf, RcvBuf int // SO_SNDBUF / SO_RCVBUF; 0 = default (autotuning)
	NoWaitAccept   bool
	ConnectTimeout time.Duration // bound on connect(); 0 = the stack's own SYN retries decide
}

// envConn is a client connection. Its methods block like a blocking socket's
// send(2) and recv(2) — one call each, so Write may return a short count —
// and return errors that ErrnoName understands (ETIMEDOUT, EPIPE,
// ECONNRESET...). Read returns io.EOF at end of file.
type envConn interface {
	Write(p []byte) (int, error)
	Read(p []byte) (int, error)
	// SetDeadline makes Read and Write give up at scenario time t (as
	// returned by Env.Now) with an error wrapping os.ErrDeadlineExceeded;
	// t = 0 removes the deadline.
	SetDeadline(t time.Duration) error
	Close() error
	// Info returns the client socket's TCP state (TCP_INFO).
	Info() ConnInfo
}

// untilReader is a connection whose Read can also end when a condition
// holds: the virtual one checks it after every settled instant, so the
// call returns at the very instant it becomes true (stopped, no data).
// Real kernel sockets cannot wait on a peer condition; scenarios poll
// there.
type untilReader interface {
	readUntil(p []byte, stop func() bool) (n int, stopped bool, err error)
}

// ConnInfo is the client's view of its connection. State uses the Linux
// names: ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT,
// CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING.
type ConnInfo struct {
	State       string        `json:"state"`
	RTO         time.Duration `json:"rto_ns"`
	RTT         time.Duration `json:"rtt_ns"`
	Retransmits int           `json:"retransmits"`
	Unacked     int           `json:"unacked"`
}

// PeerControl lets a scenario act on the peer side.
type PeerControl interface {
	// Forget makes the peer drop every connection silently (no RST sent):
	// the next segment from the client is answered with an RST. It returns
	// how many connections were forgotten.
	Forget() (int, error)
	// Accepted returns how many connections the peer accepted on port.
	Accepted(port uint16) int
	// Received returns how many bytes the peer's service on port has read
	// from clients so far (every connection).
	Received(port uint16) int64
	// Conns returns the peer's view of its connections on local port
	// (state, RTO, retransmits); a connection the peer gave up on is gone.
	Conns(port uint16) []stack.ConnStatus
	// SetUserTimeout sets TCP_USER_TIMEOUT on the peer's connections on
	// port, so gVisor gives up on unacknowledged data after d. It returns
	// how many connections it changed.
	SetUserTimeout(port uint16, d time.Duration) (int, error)
}
