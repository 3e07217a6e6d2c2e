package sockdiag

import (
	"net/netip"
	"strconv"
	"time"
)

// Timer kinds as inet_diag's idiag_timer reports them, named as ss(8)
// prints them in timer:(KIND,EXPIRES,RETRANS).
const (
	TimerNone      = ""          // 0: no timer pending
	TimerRetrans   = "on"        // 1: retransmission, tail-loss probe or RACK reordering timer
	TimerKeepalive = "keepalive" // 2: sk_timer: keepalive (also a full socket's FIN_WAIT2 timeout)
	TimerTimeWait  = "timewait"  // 3: TIME_WAIT expiry, and an orphaned FIN_WAIT2's (kept as a TIME_WAIT entry)
	TimerProbe0    = "persist"   // 4: zero-window probe timer (ICSK_TIME_PROBE0)
)

// TCP states as the kernel names them (include/net/tcp_states.h), without
// the TCP_ prefix.
const (
	StateEstablished = "ESTABLISHED"
	StateSynSent     = "SYN_SENT"
	StateSynRecv     = "SYN_RECV"
	StateFinWait1    = "FIN_WAIT1"
	StateFinWait2    = "FIN_WAIT2"
	StateTimeWait    = "TIME_WAIT"
	StateClose       = "CLOSE"
	StateCloseWait   = "CLOSE_WAIT"
	StateLastAck     = "LAST_ACK"
	StateListen      = "LISTEN"
	StateClosing     = "CLOSING"
	StateNewSynRecv  = "NEW_SYN_RECV"
)

// stateNames maps the kernel's TCP state numbers to names.
var stateNames = [...]string{
	1: StateEstablished, 2: StateSynSent, 3: StateSynRecv, 4: StateFinWait1,
	5: StateFinWait2, 6: StateTimeWait, 7: StateClose, 8: StateCloseWait,
	9: StateLastAck, 10: StateListen, 11: StateClosing, 12: StateNewSynRecv,
}

// StateName names a kernel TCP state number ("ESTABLISHED"), or "STATE-N"
// for a number this package does not know.
func StateName(n uint8) string {
	if int(n) < len(stateNames) && stateNames[n] != "" {
		return stateNames[n]
	}
	return "STATE-" + strconv.Itoa(int(n))
}

// timerNames maps idiag_timer codes to the Timer* names.
var timerNames = [...]string{TimerNone, TimerRetrans, TimerKeepalive, TimerTimeWait, TimerProbe0}

// TimerName names an idiag_timer code; unknown codes read "unknown", as in
// ss.
func TimerName(n uint8) string {
	if int(n) < len(timerNames) {
		return timerNames[n]
	}
	return "unknown"
}

// Shutdown bits in Socket.Shutdown (INET_DIAG_SHUTDOWN, sk->sk_shutdown).
const (
	// ShutdownRecv: nothing more will be received: the peer's FIN
	// arrived, the program called shutdown(SHUT_RD), or the connection
	// ended (tcp_done sets both bits).
	ShutdownRecv = 1
	// ShutdownSend: nothing more will be sent: the program called
	// shutdown(SHUT_WR) or close(), so its FIN is queued or sent.
	ShutdownSend = 2
)

// Socket is one TCP socket as inet_diag reports it (what `ss -tieo` shows).
type Socket struct {
	// Family is the socket's address family, unix.AF_INET or AF_INET6.
	// Addresses of an AF_INET6 socket talking IPv4 are reported unmapped
	// (127.0.0.1, not ::ffff:127.0.0.1), so they compare equal to what the
	// peer sees.
	Family   int
	Src, Dst netip.AddrPort
	State    string // one of the State* names
	// Inode is the socket's inode, the N in /proc/PID/fd/* -> "socket:[N]".
	// It is 0 once no descriptor refers to the socket: after close() the
	// kernel keeps an orphan (FIN_WAIT1, LAST_ACK, ...) and TIME_WAIT
	// entries without one.
	Inode uint64
	// Cookie is the kernel's unique socket id (SO_COOKIE). Unlike Inode it
	// survives close() and carries over into the TIME_WAIT entry, so it
	// follows one connection from SYN to the end.
	Cookie uint64
	UID    uint32
	// Timer is the pending timer (Timer* names), TimerExpires the time
	// until it fires (0 when overdue), TimerRetrans idiag_retrans: the
	// retransmission count for TimerRetrans, the unanswered probes for
	// TimerKeepalive and TimerProbe0.
	Timer        string
	TimerExpires time.Duration
	TimerRetrans int
	// Info is INET_DIAG_INFO, the socket's struct tcp_info (nil for
	// TIME_WAIT and SYN_RECV request entries). An older kernel sends a
	// shorter struct; the fields it lacks stay zero.
	Info *TCPInfo
	// SendQ and RecvQ are idiag_wqueue and idiag_rqueue: for a connected
	// socket the bytes sent but not acknowledged and the bytes received but
	// not read; for a listener the accept queue and its limit.
	SendQ, RecvQ uint32
	// Shutdown holds the Shutdown* bits (INET_DIAG_SHUTDOWN).
	Shutdown uint8

	ifindex uint32 // idiag_if, for Dumper.Lookup
}

// Options are a socket's timeout-relevant settings read from the owning
// process with pidfd_getfd + getsockopt. The kernel reports effective
// values: KeepIdle, KeepIntvl and KeepCnt are the namespace's
// tcp_keepalive_* defaults unless the program set its own, and they only
// matter when KeepAlive is on. UserTimeout 0 means TCP_USER_TIMEOUT is off.
type Options struct {
	KeepAlive           bool
	KeepIdle, KeepIntvl time.Duration
	KeepCnt             int
	UserTimeout         time.Duration
	// SynCnt is TCP_SYNCNT: how many SYN retransmissions connect() makes
	// (effective: the namespace's tcp_syn_retries unless set).
	SynCnt         int
	NoDelay        bool
	SndBuf, RcvBuf int
	// Inode is the inode of the descriptor that was read (fstat), so a
	// caller can check that the descriptor still is the socket it meant.
	Inode uint64
}

// ProcSocket names a socket descriptor held by a process.
type ProcSocket struct {
	PID, FD int
	Inode   uint64
	Comm    string // /proc/PID/comm, e.g. "curl"
}
