package scenarios

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/internal/sockdiag"
	"github.com/unplug-dev/unplug/stack"
)

// ExecInfo is the part of a Report that only `unplug exec --report` (and
// `unplug report` for a running serve) fills: the program, the namespace's
// timeout sysctls, and what every TCP connection of the program did.
type ExecInfo struct {
	// Argv is the program that ran (empty for a serve report).
	Argv []string `json:"argv"`
	// ExitCode is the program's exit code (128+N if signal N killed it);
	// ExitedAt when it exited, on the report's clock.
	ExitCode int           `json:"exit_code"`
	ExitedAt time.Duration `json:"exited_ns"`
	// Stopped says why unplug stopped the program, if it did ("--timeout
	// 30s: SIGTERM", "SIGTERM passed on"); empty if it exited by itself.
	Stopped string `json:"stopped,omitempty"`
	// Sysctls are the timeout sysctls read inside the namespace.
	Sysctls []Sysctl `json:"sysctls"`
	// KernelView says how the kernel's view was read ("sock_diag every
	// 20ms, socket options with pidfd_getfd") or why it was not.
	KernelView string `json:"kernel_view"`
	// Conns are the program's TCP connections in the order they opened.
	Conns []ConnReport `json:"connections"`
}

// Sysctl is one sysctl and its value.
type Sysctl struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Connection endings (ConnEnd.How).
const (
	EndClosed         = "closed"            // FIN from the program
	EndClosedUpstream = "closed-upstream"   // FIN from the upstream (the peer)
	EndReset          = "reset"             // RST from the program's kernel
	EndResetUpstream  = "reset-upstream"    // RST from the peer or a reject rule
	EndRefused        = "refused"           // the SYN was answered with RST
	EndTimeoutRetries = "timeout-retries"   // retransmissions exhausted (tcp_retries2)
	EndTimeoutUser    = "timeout-user"      // TCP_USER_TIMEOUT
	EndTimeoutKeep    = "timeout-keepalive" // keepalive probes unanswered
	EndTimeoutSyn     = "timeout-syn"       // connect: SYN retransmissions exhausted
	// EndTimeout: the program's kernel gave up (its retransmissions
	// stopped) but which limit ended it is unknown: its settings were not
	// readable and the sysctl defaults predict another time.
	EndTimeout = "timeout"
	EndHanging = "hanging" // still waiting on a dead link at the end
	EndOpen    = "open"    // open and working at the end
)

// ConnEnd is how a connection ended.
type ConnEnd struct {
	How string `json:"how"`
	// At is when, on the report's clock (the end of the run for hanging
	// and open).
	At time.Duration `json:"at_ns"`
	// Evidence says what shows it: "wire" (the packets), "kernel" (the
	// socket's state in sock_diag) or both.
	Evidence string `json:"evidence"`
	Detail   string `json:"detail"`
}

// ConnReport is one TCP connection of the program.
type ConnReport struct {
	// ID is the conn number used in the timeline and the retransmission
	// list.
	ID int `json:"id"`
	// Client is the program's end; Peer the address it connected to;
	// Upstream what answered it behind the peer ("198.19.7.2:8000
	// (transparent)", "127.0.0.1:8000 (--forward 8080)", "peer http").
	Client   string `json:"client"`
	Peer     string `json:"peer"`
	Upstream string `json:"upstream"`
	// Opened is the first SYN; Established when the handshake completed
	// (absent if it never did).
	Opened      time.Duration  `json:"opened_ns"`
	Established *time.Duration `json:"established_ns,omitempty"`
	// BytesSent and BytesReceived count payload that crossed the link
	// (program → upstream and back), each byte once.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	// LastReceived is the last packet from the peer that got through
	// before the end (keepalive counts idle time from it).
	LastReceived *time.Duration `json:"last_received_ns,omitempty"`
	// Retransmits and Probes are the program's kernel's; PeerRetransmits
	// the peer's.
	Retransmits     int `json:"retransmits"`
	Probes          int `json:"probes"`
	PeerRetransmits int `json:"peer_retransmits"`
	// FaultHit is when a rule first dropped one of its packets, FaultLast
	// the last such drop, Dropped how many (absent: never hit).
	FaultHit  *time.Duration `json:"fault_hit_ns,omitempty"`
	FaultLast *time.Duration `json:"fault_last_ns,omitempty"`
	Dropped   int            `json:"dropped"`
	// Recovered is when traffic passed both ways again after the last
	// drop (absent: it did not).
	Recovered *time.Duration `json:"recovered_ns,omitempty"`
	// Backoff is the mean ratio of consecutive retransmission intervals
	// of the program's kernel during the fault (0: fewer than two).
	Backoff float64 `json:"backoff_ratio"`
	// Settings are the socket's timeout settings and the namespace's
	// sysctls; Theory what they predict.
	Settings TimeoutSettings `json:"settings"`
	Theory   string          `json:"theory"`
	// InFlight and Idle are the predictions behind Theory (Idle absent:
	// an idle connection never notices).
	InFlight Estimate  `json:"in_flight"`
	Idle     *Estimate `json:"idle,omitempty"`
	// Connect is the prediction for a connect() the fault hit before the
	// handshake completed, counted from the first SYN (absent: the fault
	// hit an established connection, or none).
	Connect *Estimate `json:"connect,omitempty"`
	End     ConnEnd   `json:"end"`
	// Noticed is how long after FaultHit the connection ended (absent if
	// it was never hit or did not end).
	Noticed *time.Duration `json:"noticed_ns,omitempty"`
	// Verdict compares what happened with the theory: "the program closed
	// it 5.0 s into the fault, before the kernel's ≈ 934 s".
	Verdict string `json:"verdict"`
	// Kernel is the kernel's view sampled over time: one entry per change
	// of state, timer, retransmission count, backoff or probes.
	Kernel []KernelSample `json:"kernel"`
}

// KernelSample is one reading of a socket through sock_diag (what `ss
// -tieo` prints).
type KernelSample struct {
	T            time.Duration `json:"t_ns"`
	State        string        `json:"state"`
	Timer        string        `json:"timer,omitempty"`
	TimerExpires time.Duration `json:"timer_expires_ns,omitempty"`
	// Retransmits is tcpi_retransmits (consecutive unanswered RTOs),
	// Backoff tcpi_backoff, Probes tcpi_probes.
	Retransmits int           `json:"retransmits"`
	Backoff     int           `json:"backoff"`
	Probes      int           `json:"probes"`
	RTO         time.Duration `json:"rto_ns"`
	RTT         time.Duration `json:"rtt_ns"`
	Unacked     int           `json:"unacked"`
	SendQ       int           `json:"send_q"`
	// Closed means no descriptor holds the socket any more: the program
	// closed it (or exited) and the kernel finishes it on its own.
	Closed bool `json:"closed"`
}

// KernelConn is the kernel's view of one socket, as the exec environment
// collects it; Gone is the first sample time it was no longer listed.
type KernelConn struct {
	Src, Dst netip.AddrPort
	Samples  []KernelSample
	Settings *TimeoutSettings // nil if the options could not be read
	Gone     time.Duration    // 0: listed until the end
}

// buildConns turns what the tracker and the kernel view saw into the
// report's connections. end is the end of the run, exited when the
// program exited; upstream names what is behind a peer address.
//
// stopped says why unplug stopped the program ("" if it exited by
// itself): a connection still hit by the fault that only closed as the
// stopped program exited was STILL HANGING.
func (ct *connTracker) buildConns(end, exited time.Duration, stopped string, kernel []KernelConn, defaults TimeoutSettings, upstream func(netip.AddrPort) string) []ConnReport {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	kv := map[[2]netip.AddrPort]*KernelConn{}
	for i := range kernel {
		k := &kernel[i]
		kv[[2]netip.AddrPort{unmapAP(k.Src), unmapAP(k.Dst)}] = k
	}
	var out []ConnReport
	for _, c := range ct.order {
		cr := ConnReport{
			ID: c.id, Client: c.client.String(), Peer: c.peer.String(), Upstream: upstream(c.peer),
			Opened: c.opened, BytesSent: c.bytes(packet.In), BytesReceived: c.bytes(packet.Out),
			Retransmits: c.retrans[packet.In], Probes: c.probes, PeerRetransmits: c.retrans[packet.Out],
			Dropped: c.dropped, Settings: defaults,
		}
		if c.hasEstablished {
			cr.Established = durPtr(c.established)
		}
		if c.lastRecv > 0 {
			cr.LastReceived = durPtr(c.lastRecv)
		}
		if c.dropped > 0 {
			cr.FaultHit, cr.FaultLast = durPtr(c.firstDrop), durPtr(c.lastDrop)
		}
		if c.hasRecovered {
			cr.Recovered = durPtr(c.recovered)
		}
		if len(c.ratios) > 0 {
			sum := 0.0
			for _, r := range c.ratios {
				sum += r
			}
			cr.Backoff = sum / float64(len(c.ratios))
		}
		k := kv[[2]netip.AddrPort{unmapAP(c.client), unmapAP(c.peer)}]
		if k != nil {
			cr.Kernel = k.Samples
			if k.Settings != nil {
				s := *k.Settings
				s.Retries2, s.SynLinear = defaults.Retries2, defaults.SynLinear
				if s.SynRetries == 0 { // TCP_SYNCNT not read
					s.SynRetries = defaults.SynRetries
				}
				cr.Settings = s
			}
		}
		cr.Settings.RTO, cr.Settings.RTT = c.rto(k)
		cr.InFlight, _ = InFlightTimeout(cr.Settings)
		if idle, _, ok := IdleTimeout(cr.Settings); ok {
			cr.Idle = &idle
		}
		cr.Theory = TheoryText(cr.Settings)
		if cr.FaultHit != nil && (cr.Established == nil || *cr.Established > *cr.FaultHit) {
			est, _ := connectTimeout(cr.Settings)
			cr.Connect = &est
			cr.Theory = connectPhrase(cr.Settings)
		}
		cr.End = c.ending(end, exited, k, cr.Settings)
		if stopped != "" && c.dropped > 0 && !c.hasRecovered && (cr.End.How == EndClosed || cr.End.How == EndReset || cr.End.How == EndOpen) && cr.End.At >= exited-100*time.Millisecond {
			cr.End = ConnEnd{How: EndHanging, At: exited, Evidence: cr.End.Evidence,
				Detail: fmt.Sprintf("STILL HANGING when unplug stopped the program (%s): %s since a rule first dropped its packets, no error; the kernel closed the socket as the program died", stopped, shortSeconds(exited-c.firstDrop))}
		}
		if c.dropped > 0 && cr.End.How != EndHanging && cr.End.How != EndOpen && cr.End.At >= c.firstDrop {
			cr.Noticed = durPtr(cr.End.At - c.firstDrop)
		}
		cr.Verdict = c.verdict(&cr)
		out = append(out, cr)
	}
	return out
}

// rto is the connection's base RTO and smoothed RTT: tcp_info's from the
// first kernel sample taken before any backoff, else the first
// retransmission interval (RTT unknown), else 0: unknown.
func (c *connTrack) rto(k *KernelConn) (rto, rtt time.Duration) {
	if k != nil {
		for _, s := range k.Samples {
			if s.RTO > 0 && s.Backoff == 0 && s.State == "ESTABLISHED" {
				return s.RTO, s.RTT
			}
		}
	}
	if len(c.intervals) > 0 && c.intervals[0] >= kernelRTOMin && c.intervals[0] < time.Second {
		return c.intervals[0], 0
	}
	return 0, 0
}

func durPtr(d time.Duration) *time.Duration { return &d }

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// describeUpstream returns the function naming what answers each peer
// address: a --forward target, the real destination (--transparent), or
// one of the peer's services.
func describeUpstream(forwards map[uint16]string, transparent bool) func(netip.AddrPort) string {
	services := map[uint16]string{80: "http", 7: "echo", 9: "discard", 5001: "sink", 5002: "source"}
	return func(ap netip.AddrPort) string {
		peer := ap.Addr() == stack.DefaultAddr4 || ap.Addr() == stack.DefaultAddr6
		if t, ok := forwards[ap.Port()]; ok && peer {
			return fmt.Sprintf("%s (--forward %d)", t, ap.Port())
		}
		if name, ok := services[ap.Port()]; ok && peer {
			return "the peer's " + name + " service"
		}
		if transparent && !peer {
			return ap.String() + " (the real destination, re-dialed by the peer)"
		}
		return ap.String()
	}
}

// joinArgv renders argv for the report header.
func joinArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// execSysctls are the namespace sysctls the report shows.
var execSysctls = []string{
	"net.ipv4.tcp_retries2", "net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts", "net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}

// readSysctls reads, with get, the sysctls the report shows and the
// timeout settings an untouched socket has in that namespace (source says
// whose defaults they are); what cannot be read stays out (zero).
func readSysctls(get func(name string) (string, error), source string) ([]Sysctl, TimeoutSettings) {
	var shown []Sysctl
	for _, name := range execSysctls {
		if v, err := get(name); err == nil {
			shown = append(shown, Sysctl{Name: name, Value: v})
		}
	}
	t, _ := sockdiag.ReadTCPSysctls(get)
	return shown, TimeoutSettings{Source: source, Retries2: t.Retries2,
		SynRetries: t.SynRetries, SynLinear: max(t.SynLinearTimeouts, 0),
		KeepIdle: t.KeepaliveTime, KeepIntvl: t.KeepaliveIntvl, KeepCnt: t.KeepaliveProbes}
}

// execSummary is the outcome line: how many connections ended how.
func execSummary(info *ExecInfo) string {
	counts := map[string]int{}
	var order []string
	for _, c := range info.Conns {
		if counts[c.End.How] == 0 {
			order = append(order, c.End.How)
		}
		counts[c.End.How]++
	}
	s := fmt.Sprintf("the program exited with %d", info.ExitCode)
	if info.Stopped != "" {
		s += " (" + info.Stopped + ")"
	}
	s += fmt.Sprintf("; %d TCP connection", len(info.Conns))
	if len(info.Conns) != 1 {
		s += "s"
	}
	for i, how := range order {
		if i == 0 {
			s += ": "
		} else {
			s += ", "
		}
		s += fmt.Sprintf("%d %s", counts[how], how)
	}
	return s
}
