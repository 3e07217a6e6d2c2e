package scenarios

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/fault/flow"
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
	Sysctls map[string]string `json:"sysctls"`
	// KernelView says how the kernel's view was read ("sock_diag every
	// 20ms, socket options with pidfd_getfd") or why it was not.
	KernelView string `json:"kernel_view"`
	// Conns are the program's TCP connections in the order they opened.
	Conns []ConnReport `json:"connections"`
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
	EndHanging        = "hanging"           // still waiting on a dead link at the end
	EndOpen           = "open"              // open and working at the end
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
	End      ConnEnd   `json:"end"`
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

// connTracker follows every TCP connection the recorder numbers, with what
// the per-connection report needs. It is a fault.Observer placed after
// the recorder.
type connTracker struct {
	rec   *Recorder
	mu    sync.Mutex
	conns map[*connRec]*connTrack
	order []*connTrack
}

// connTrack is the wire's view of one connection.
type connTrack struct {
	id             int
	client, peer   netip.AddrPort
	opened         time.Duration
	synAck         bool
	established    time.Duration
	hasEstablished bool
	base           [3]uint32 // ISN per direction
	hasBase        [3]bool
	maxEnd         [3]uint32 // highest payload sequence end that passed
	hasMax         [3]bool
	fin, rst       [3]time.Duration
	hasFin, hasRst [3]bool
	retrans        [3]int
	probes         int
	lastKind       string // the program's last retransmission/probe kind
	lastIn         time.Duration
	firstDrop      time.Duration
	lastDrop       time.Duration
	dropped        int
	passedAfter    [3]bool // a packet passed in each direction after lastDrop
	recovered      time.Duration
	hasRecovered   bool
	firstData      time.Duration // first dropped data segment from the program
	hasFirstData   bool
	lastRecv       time.Duration // last packet from the peer that passed
	intervals      []time.Duration
	ratios         []float64
	injectedRST    bool
}

func newConnTracker(rec *Recorder) *connTracker {
	return &connTracker{rec: rec, conns: map[*connRec]*connTrack{}}
}

// Observe implements fault.Observer: the recorder first, then the
// per-connection view of the same packet under the recorder's conn id.
func (ct *connTracker) Observe(ev *fault.Event) {
	ct.rec.Observe(ev)
	p := ev.Packet
	if p == nil || p.Version == 0 || !p.IsTCP() {
		return
	}
	seg := p.Segment()
	key := flow.KeyOf(&seg)
	ct.rec.mu.Lock()
	cr := ct.rec.conns[key]
	t := ev.Time.Sub(ct.rec.start)
	var pk Packet
	if n := len(ct.rec.retrans); n > 0 && ct.rec.retrans[n-1].T == t && cr != nil && ct.rec.retrans[n-1].Conn == cr.id {
		r := ct.rec.retrans[n-1]
		pk = Packet{Kind: r.Kind, Interval: r.Interval, Ratio: r.Ratio}
	}
	ct.rec.mu.Unlock()
	if cr == nil {
		return
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	c := ct.conns[cr]
	if c == nil {
		c = &connTrack{id: cr.id, client: key.App, peer: key.Peer, opened: t}
		ct.conns[cr] = c
		ct.order = append(ct.order, c)
	}
	c.observe(t, p, ev.Decision.Verdict, pk)
}

func (c *connTrack) observe(t time.Duration, p *fault.Packet, verdict fault.Verdict, pk Packet) {
	d := p.Dir
	passed := verdict != fault.Dropped
	syn := p.Flags&fault.FlagSYN != 0
	ack := p.Flags&fault.FlagACK != 0
	if syn && !c.hasBase[d] {
		c.base[d], c.hasBase[d] = p.Seq, true
	} else if !c.hasBase[d] {
		c.base[d], c.hasBase[d] = p.Seq-1, true
	}
	if syn && ack && d == fault.Out && passed {
		c.synAck = true
	}
	if !c.hasEstablished && passed && ack && !syn && d == fault.In && c.synAck {
		c.established, c.hasEstablished = t, true
	}
	if verdict == fault.Injected {
		if p.Flags&fault.FlagRST != 0 {
			c.injectedRST = true
			if !c.hasRst[fault.Out] {
				c.rst[fault.Out], c.hasRst[fault.Out] = t, true
			}
		}
		return
	}
	if p.Flags&fault.FlagFIN != 0 && !c.hasFin[d] {
		c.fin[d], c.hasFin[d] = t, true
	}
	if p.Flags&fault.FlagRST != 0 && !c.hasRst[d] {
		c.rst[d], c.hasRst[d] = t, true
	}
	if passed && p.PayloadLen > 0 {
		end := p.Seq + uint32(p.PayloadLen)
		if !c.hasMax[d] || int32(end-c.maxEnd[d]) > 0 {
			c.maxEnd[d], c.hasMax[d] = end, true
		}
	}
	if d == fault.Out && passed {
		c.lastRecv = t
	}
	if d == fault.In {
		c.lastIn = t
	}
	switch pk.Kind {
	case "retransmit":
		c.retrans[d]++
	case "keepalive-probe", "zero-window-probe":
		if d == fault.In {
			c.probes++
		}
	}
	if d == fault.In && pk.Kind != "" {
		c.lastKind = pk.Kind
		if pk.Interval > 0 {
			c.intervals = append(c.intervals, pk.Interval)
		}
		if pk.Ratio > 0 && !passed {
			c.ratios = append(c.ratios, pk.Ratio)
		}
	}
	if !passed {
		if c.dropped == 0 {
			c.firstDrop = t
		}
		c.dropped++
		c.lastDrop = t
		c.passedAfter = [3]bool{}
		c.hasRecovered = false
		if d == fault.In && (p.PayloadLen > 0 || p.Flags&fault.FlagFIN != 0) && !c.hasFirstData {
			c.firstData, c.hasFirstData = t, true
		}
		return
	}
	if c.dropped > 0 && !c.hasRecovered {
		c.passedAfter[d] = true
		if c.passedAfter[fault.In] && c.passedAfter[fault.Out] {
			c.recovered, c.hasRecovered = t, true
		}
	}
}

func (c *connTrack) bytes(d fault.Direction) int64 {
	if !c.hasMax[d] {
		return 0
	}
	n := int64(int32(c.maxEnd[d] - c.base[d] - 1))
	return max(n, 0)
}

// buildConns turns what the tracker and the kernel view saw into the
// report's connections. end is the end of the run, exited when the
// program exited; upstream names what is behind a peer address.
func (ct *connTracker) buildConns(end, exited time.Duration, kernel []KernelConn, defaults TimeoutSettings, upstream func(netip.AddrPort) string) []ConnReport {
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
			Opened: c.opened, BytesSent: c.bytes(fault.In), BytesReceived: c.bytes(fault.Out),
			Retransmits: c.retrans[fault.In], Probes: c.probes, PeerRetransmits: c.retrans[fault.Out],
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
				s.Retries2 = defaults.Retries2
				cr.Settings = s
			}
		}
		cr.Settings.RTO = c.rto(k)
		cr.InFlight, _ = InFlightTimeout(cr.Settings)
		if idle, _, ok := IdleTimeout(cr.Settings); ok {
			cr.Idle = &idle
		}
		cr.Theory = TheoryText(cr.Settings)
		cr.End = c.ending(end, exited, k, cr.Settings)
		if c.dropped > 0 && cr.End.How != EndHanging && cr.End.How != EndOpen && cr.End.At >= c.firstDrop {
			cr.Noticed = durPtr(cr.End.At - c.firstDrop)
		}
		cr.Verdict = c.verdict(&cr)
		out = append(out, cr)
	}
	return out
}

// rto is the connection's base RTO: tcp_info's from the first kernel
// sample taken before any backoff, else the first retransmission
// interval, else Linux's minimum.
func (c *connTrack) rto(k *KernelConn) time.Duration {
	if k != nil {
		for _, s := range k.Samples {
			if s.RTO > 0 && s.Backoff == 0 && s.State == "ESTABLISHED" {
				return s.RTO
			}
		}
	}
	if len(c.intervals) > 0 && c.intervals[0] >= linuxRTOMin && c.intervals[0] < time.Second {
		return c.intervals[0]
	}
	return linuxRTOMin
}

// ending decides how the connection ended: its own FIN or RST, the
// upstream's, a refusal, the kernel giving up (from the kernel view when it
// saw the socket vanish, else from the retransmissions stopping), or still
// hanging / open at the end.
func (c *connTrack) ending(end, exited time.Duration, k *KernelConn, s TimeoutSettings) ConnEnd {
	type cand struct {
		at  time.Duration
		end ConnEnd
	}
	var cs []cand
	add := func(at time.Duration, how, evidence, detail string) {
		cs = append(cs, cand{at, ConnEnd{How: how, At: at, Evidence: evidence, Detail: detail}})
	}
	if !c.hasEstablished && c.hasRst[fault.Out] {
		who := "the upstream"
		if c.injectedRST {
			who = "a reject rule"
		}
		add(c.rst[fault.Out], EndRefused, "wire", "the SYN was answered with RST by "+who)
	}
	// The kernel's view: the program's close() (the FIN may be stuck
	// behind unacknowledged data during an outage, so the wire shows
	// nothing) and the socket's disappearance.
	var closedAt, goneAt time.Duration
	var lastTimer string
	var lastSample KernelSample
	if k != nil {
		for _, sm := range k.Samples {
			if sm.Closed && closedAt == 0 {
				closedAt = sm.T
			}
			if sm.State != "TIME_WAIT" {
				lastSample = sm
				lastTimer = sm.Timer
			}
		}
		goneAt = k.Gone
	}
	if c.hasRst[fault.In] {
		detail := "the program's kernel sent RST (an abort: SO_LINGER 0, or close with unread data)"
		if c.lastKind == "keepalive-probe" {
			add(c.rst[fault.In], EndTimeoutKeep, "wire", fmt.Sprintf("%d keepalive probes went unanswered; the kernel reset the connection (ETIMEDOUT)", c.probes))
		} else {
			add(c.rst[fault.In], EndReset, "wire", detail)
		}
	}
	if c.hasFin[fault.In] {
		add(c.fin[fault.In], EndClosed, "wire", "the program closed it (FIN)")
	} else if closedAt > 0 && (goneAt == 0 || closedAt < goneAt) {
		add(closedAt, EndClosed, "kernel", fmt.Sprintf("the program closed it (no descriptor holds the socket; state %s, FIN queued behind unacknowledged data)", lastSample.State))
	}
	if c.hasFin[fault.Out] && !c.hasFin[fault.In] {
		add(c.fin[fault.Out], EndClosedUpstream, "wire", "the upstream closed it (FIN from the peer)")
	}
	if c.hasRst[fault.Out] && c.hasEstablished {
		add(c.rst[fault.Out], EndResetUpstream, "wire", "the peer sent RST")
	}
	// The kernel gave up: the socket vanished while its retransmission or
	// keepalive timer ran, without the program closing it first.
	if goneAt > 0 && closedAt == 0 && !c.hasFin[fault.In] && !c.hasRst[fault.In] {
		at := lastSample.T + lastSample.TimerExpires
		if at <= 0 || at > goneAt {
			at = goneAt
		}
		switch {
		case !c.hasEstablished:
			add(at, EndTimeoutSyn, "kernel", "connect: SYN retransmissions exhausted (tcp_syn_retries)")
		case lastTimer == "keepalive":
			add(at, EndTimeoutKeep, "kernel", fmt.Sprintf("%d keepalive probes went unanswered (ETIMEDOUT)", lastSample.Probes))
		case lastTimer == "on":
			how, detail := c.retransTimeout(s, lastSample.Retransmits)
			add(at, how, "kernel", detail)
		}
	}
	// Without a kernel view: the program's retransmissions stopped before
	// the end with nothing sent since: the kernel gave up.
	if k == nil && len(cs) == 0 && c.dropped > 0 && c.lastKind == "retransmit" && !c.hasRecovered {
		silence := end - c.lastIn
		last := time.Duration(0)
		if n := len(c.intervals); n > 0 {
			last = c.intervals[n-1]
		}
		if last > 0 && silence > 3*last {
			how, detail := c.retransTimeout(s, c.retrans[fault.In])
			add(c.lastIn+min(2*last, linuxRTOMax), how, "wire", detail+"; inferred: its retransmissions stopped")
		}
	}
	if len(cs) > 0 {
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].at < cs[j].at })
		e := cs[0].end
		if len(cs) > 1 && cs[1].at-cs[0].at < 50*time.Millisecond && cs[1].end.How == e.How {
			e.Evidence = "wire and kernel"
		}
		if exited > 0 && e.How == EndClosed && e.At >= exited-50*time.Millisecond && e.At <= exited+time.Second {
			e.Detail += " — when it exited"
		}
		return e
	}
	if c.dropped > 0 && !c.hasRecovered {
		return ConnEnd{How: EndHanging, At: end, Evidence: evidenceOf(k), Detail: fmt.Sprintf("STILL HANGING: %s since a rule first dropped its packets, no error yet", shortSeconds(end-c.firstDrop))}
	}
	return ConnEnd{How: EndOpen, At: end, Evidence: evidenceOf(k), Detail: "open at the end"}
}

func evidenceOf(k *KernelConn) string {
	if k != nil {
		return "wire and kernel"
	}
	return "wire"
}

// retransTimeout tells which limit ended a connection whose
// retransmissions timed out: TCP_USER_TIMEOUT if set and sooner than the
// tcp_retries2 model, else tcp_retries2.
func (c *connTrack) retransTimeout(s TimeoutSettings, n int) (how, detail string) {
	est, by := InFlightTimeout(s)
	if by == "TCP_USER_TIMEOUT" {
		return EndTimeoutUser, fmt.Sprintf("TCP_USER_TIMEOUT %s ran out after %d retransmissions (ETIMEDOUT; theory %s)", shortSeconds(s.UserTimeout), n, est)
	}
	return EndTimeoutRetries, fmt.Sprintf("retransmissions exhausted: tcp_retries2=%d after %d retransmissions (ETIMEDOUT; theory %s)", s.Retries2, n, est)
}

// verdict says whether the connection did better than its settings alone
// would have.
func (c *connTrack) verdict(cr *ConnReport) string {
	if cr.FaultHit == nil {
		if cr.End.How == EndRefused {
			return "refused: " + cr.End.Detail
		}
		return "no packet of it was dropped"
	}
	hit := *cr.FaultHit
	switch cr.End.How {
	case EndHanging:
		return fmt.Sprintf("did not notice the dead link in %s; its settings predict %s", shortSeconds(cr.End.At-hit), c.predictionSentence(cr))
	case EndOpen:
		if cr.Recovered != nil {
			return fmt.Sprintf("recovered %s after the first drop: the link came back before anything timed out", shortSeconds(*cr.Recovered-hit))
		}
		return "open at the end"
	case EndClosed, EndReset:
		return fmt.Sprintf("the program gave up itself %s after the first drop, before the kernel's %s: it did better than its socket settings", shortSeconds(cr.End.At-hit), c.predictionSentence(cr))
	case EndTimeoutRetries, EndTimeoutUser, EndTimeoutKeep, EndTimeoutSyn:
		return fmt.Sprintf("the kernel gave up %s after the first drop (%s); the program had no faster timeout of its own", shortSeconds(cr.End.At-hit), cr.End.How)
	}
	return cr.End.Detail
}

func (c *connTrack) predictionSentence(cr *ConnReport) string {
	if c.hasFirstData || c.retrans[fault.In] > 0 {
		return fmt.Sprintf("ETIMEDOUT %s after a request", cr.InFlight)
	}
	if cr.Idle != nil {
		return fmt.Sprintf("keepalive notices an idle connection %s", *cr.Idle)
	}
	return "that an idle connection never notices"
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
