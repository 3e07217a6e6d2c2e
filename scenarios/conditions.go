package scenarios

import "time"

// Conditions are what a precise theory needs to know about the run besides
// the parameters: which TCP the client is, and its socket's state just
// before the first fault (TCP_INFO's smoothed RTT and RTO), the kernel's
// timer frequency, and for keepalive when the client last received a
// packet. A theory computed before the run uses nominal conditions
// (nominalConditions); Run recomputes it from the measured ones.
type Conditions struct {
	Kernel  bool
	Virtual bool // deterministic clock: theory and run agree to the nanosecond
	// HZ is the kernel's timer frequency (0: unknown, defaultHZ assumed).
	HZ int
	// Measured is true when RTT and RTO were read from the client socket.
	Measured bool
	RTT, RTO time.Duration
	// LinkDelay is the virtual link's one-way delay.
	LinkDelay time.Duration
	// PeerRTO is the peer's RTO read before its packets start dying
	// (peer-retransmit); 0 when not read.
	PeerRTO time.Duration
	// PeerFirstSent is when the peer first sent the segment its RTO then
	// retransmits (the original transmission of the first retransmission
	// of its longest series), relative to the anchor; HasPeerFirstSent
	// says the timeline holds it (peer-retransmit: gVisor's user timeout
	// counts from it).
	PeerFirstSent    time.Duration
	HasPeerFirstSent bool
	// SndBuf and MSS are the kernel client's SO_SNDBUF and send MSS.
	SndBuf, MSS int
	// LastReceived is when the client last received a packet before the
	// anchor, relative to the anchor (≤ 0); 0 when unknown.
	LastReceived time.Duration
	// WindowClosed is when the fault layer passed the peer's ACK that
	// closed the window for good (the first of the zero-window ACKs
	// before the client's first window probe), relative to the anchor;
	// HasWindowClosed says it was seen. OutcomeAt is the outcome's time,
	// relative to the anchor (0: none yet).
	WindowClosed    time.Duration
	HasWindowClosed bool
	// WindowRTO is the client's RTO read as the window closed (0: not
	// read).
	WindowRTO time.Duration
	OutcomeAt time.Duration
}

// defaultHZ is CONFIG_HZ when it cannot be found out (this build machine's).
const defaultHZ = 250

func (c Conditions) hz() int {
	if c.HZ > 0 {
		return c.HZ
	}
	return defaultHZ
}

// tunRTT is the smoothed RTT (tcpi_rtt) a kernel client's handshake over
// the TUN leaves: the netstack answers on the same machine, measured
// 0.2–0.3 ms (258 µs in a `unplug run timeout` report);
// TestNominalKernelRTOMeasured holds the nominal conditions to a fresh
// measurement.
const tunRTT = 250 * time.Microsecond

// kernelRTO is the RTO the kernel sets for a socket whose RTT samples
// were all about rtt (tcp_rtt_estimator, tcp_set_rto): srtt + rttvar,
// rttvar at least tcp_rto_min (200 ms), converted to jiffies rounding up
// (usecs_to_jiffies). Any RTT below one jiffy gives 200 ms + one jiffy:
// 204 ms at HZ 250, what tcpi_rto shows over the TUN.
func kernelRTO(hz int, rtt time.Duration) time.Duration {
	k := kernelClock{hz: hz}
	return k.dur(k.jiffies(kernelRTOMin + rtt))
}

// nominalConditions are the conditions a theory assumes before the run:
// on the kernel the TUN's sub-millisecond RTT (tunRTT), so the RTO the
// kernel derives from it, 200 ms + one jiffy (kernelRTO); on gVisor no RTT
// sample (RTO 1 s).
func nominalConditions(kernel bool) Conditions {
	c := Conditions{Kernel: kernel, Virtual: !kernel, HZ: hostHZ()}
	if kernel {
		c.RTT = tunRTT
		c.RTO = kernelRTO(c.hz(), c.RTT)
	} else {
		c.RTO = gvisorInitialRTO
	}
	return c
}

// ClientInfo is the client socket's state just before the first fault, as
// the report shows it: the theory's starting point.
type ClientInfo struct {
	// T is when it was read (scenario time).
	T   time.Duration `json:"t_ns"`
	RTT time.Duration `json:"rtt_ns"`
	RTO time.Duration `json:"rto_ns"`
	// HZ is the kernel's timer frequency (kernel clients only) and HZFrom
	// where it was read.
	HZ     int    `json:"hz,omitempty"`
	HZFrom string `json:"hz_from,omitempty"`
	// SndBuf is SO_SNDBUF and MSS the send MSS (kernel clients only).
	SndBuf int `json:"sndbuf,omitempty"`
	MSS    int `json:"mss,omitempty"`
}

// sendBuf is what a kernel socket's send buffer looks like.
type sendBuf struct{ SndBuf, MSS int }

// sendBufferer is a Conn that can report its send buffer.
type sendBufferer interface{ sendBuffer() (sendBuf, bool) }

// conditionsOf derives the measured conditions from a finished report.
func conditionsOf(rep *Report) Conditions {
	c := Conditions{Kernel: rep.Client == "kernel", Virtual: rep.Clock == ClockVirtual, LinkDelay: rep.LinkDelay}
	if ci := rep.ClientInfo; ci != nil {
		c.HZ, c.RTT, c.RTO, c.Measured = ci.HZ, ci.RTT, ci.RTO, ci.RTO > 0
		c.SndBuf, c.MSS = ci.SndBuf, ci.MSS
	}
	if !c.Measured {
		n := nominalConditions(c.Kernel)
		c.HZ, c.RTT, c.RTO = n.HZ, n.RTT, n.RTO
	}
	if m, ok := rep.Measurement("peer RTO before the drop"); ok {
		c.PeerRTO = time.Duration(m.Value * float64(time.Second))
	}
	for _, ev := range rep.Timeline {
		if ev.T > rep.Anchor {
			break
		}
		if p := ev.Packet; p != nil && p.Dir == "out" && p.Verdict == "pass" && p.Proto == "tcp" {
			c.LastReceived = ev.T - rep.Anchor
		}
	}
	if m, ok := rep.Measurement(windowRTOName); ok {
		c.WindowRTO = time.Duration(m.Value * float64(time.Second))
	}
	if rep.Outcome != "" {
		c.OutcomeAt = rep.OutcomeAt - rep.Anchor
	}
	c.WindowClosed, c.HasWindowClosed = windowClosed(rep)
	c.PeerFirstSent, c.HasPeerFirstSent = peerFirstSent(rep)
	return c
}

// peerFirstSent finds the original transmission of the segment the peer
// retransmits first: the last packet from the peer on the same connection
// with the same sequence number before that retransmission. Its time is
// relative to the anchor.
func peerFirstSent(rep *Report) (time.Duration, bool) {
	s := longestSeries(rep, "out", "retransmit")
	if len(s) == 0 {
		return 0, false
	}
	first := s[0]
	at, ok := time.Duration(0), false
	for _, ev := range rep.Timeline {
		if ev.T >= first.T {
			break
		}
		if p := ev.Packet; p != nil && p.Dir == "out" && p.Proto == "tcp" && p.Conn == first.Conn && p.Seq == first.Seq && p.Len > 0 {
			at, ok = ev.T-rep.Anchor, true
		}
	}
	return at, ok
}

// windowClosed finds the peer's ACK that closed the window for good: the
// first of the run of zero-window ACKs that precedes the client's first
// window probe (a zero-window probe, or a retransmission of data sent
// beyond the window); its time is relative to the anchor.
func windowClosed(rep *Report) (time.Duration, bool) {
	probe := -1
	for i, ev := range rep.Timeline {
		if p := ev.Packet; p != nil && p.Dir == "in" && (p.Kind == "zero-window-probe" || p.Kind == "retransmit") {
			probe = i
			break
		}
	}
	at, ok := time.Duration(0), false
	for i := probe - 1; i >= 0; i-- {
		p := rep.Timeline[i].Packet
		if p == nil || p.Dir != "out" || p.Proto != "tcp" || p.Verdict != "pass" {
			continue
		}
		if p.Win != 0 {
			break
		}
		at, ok = rep.Timeline[i].T-rep.Anchor, true
	}
	return at, ok
}
