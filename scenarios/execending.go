package scenarios

import (
	"fmt"
	"sort"
	"time"

	"github.com/unplug-dev/unplug/internal/packet"
)

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
	if !c.hasEstablished && c.hasRst[packet.Out] {
		who := "the upstream"
		if c.injectedRST {
			who = "a reject rule"
		}
		add(c.rst[packet.Out], EndRefused, "wire", "the SYN was answered with RST by "+who)
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
	if c.hasRst[packet.In] {
		detail := "the program's kernel sent RST (an abort: SO_LINGER 0, or close with unread data)"
		if c.lastKind == "keepalive-probe" {
			add(c.rst[packet.In], EndTimeoutKeep, "wire", fmt.Sprintf("%d keepalive probes went unanswered; the kernel reset the connection (ETIMEDOUT)", c.probes))
		} else {
			add(c.rst[packet.In], EndReset, "wire", detail)
		}
	}
	if c.hasFin[packet.In] {
		add(c.fin[packet.In], EndClosed, "wire", "the program closed it (FIN)")
	} else if closedAt > 0 && (goneAt == 0 || closedAt < goneAt) {
		add(closedAt, EndClosed, "kernel", fmt.Sprintf("the program closed it (no descriptor holds the socket; state %s, FIN queued behind unacknowledged data)", lastSample.State))
	}
	if c.hasFin[packet.Out] && !c.hasFin[packet.In] {
		add(c.fin[packet.Out], EndClosedUpstream, "wire", "the upstream closed it (FIN from the peer)")
	}
	if c.hasRst[packet.Out] && c.hasEstablished {
		add(c.rst[packet.Out], EndResetUpstream, "wire", "the peer sent RST")
	}
	// The kernel gave up: the socket vanished while its retransmission or
	// keepalive timer ran, without the program closing it first.
	if goneAt > 0 && closedAt == 0 && !c.hasFin[packet.In] && !c.hasRst[packet.In] {
		at := kernelGaveUp(lastSample, goneAt)
		switch {
		case !c.hasEstablished:
			limit := fmt.Sprintf("%d SYN retries", s.SynRetries)
			if s.UserTimeout > 0 {
				limit = "TCP_USER_TIMEOUT " + shortSeconds(s.UserTimeout)
			}
			add(at, EndTimeoutSyn, "kernel", fmt.Sprintf("connect: SYN retransmissions exhausted (%s; ETIMEDOUT)", limit))
		case lastTimer == "keepalive":
			add(at, EndTimeoutKeep, "kernel", fmt.Sprintf("%d keepalive probes went unanswered (ETIMEDOUT)", lastSample.Probes))
		case lastTimer == "on":
			how, detail := c.retransTimeout(s, lastSample.Retransmits, "RTO retransmissions")
			add(at, how, "kernel", detail)
		case lastTimer == "persist":
			// tcp_probe_timer: unanswered zero-window probes end it at
			// tcp_retries2 of them, or at TCP_USER_TIMEOUT.
			how := EndTimeoutRetries
			limit := fmt.Sprintf("tcp_retries2=%d", s.Retries2)
			if s.UserTimeout > 0 {
				how, limit = EndTimeoutUser, "TCP_USER_TIMEOUT "+shortSeconds(s.UserTimeout)
			}
			add(at, how, "kernel", fmt.Sprintf("%d zero-window probes went unanswered (%s; ETIMEDOUT)", lastSample.Probes, limit))
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
			at := c.lastIn + min(2*last, kernelRTOMax)
			how, detail := c.retransTimeout(s, c.retrans[packet.In], "retransmissions")
			if est, _ := InFlightTimeout(s); s.Source != "getsockopt" && c.hasFirstData && (at-c.firstData < est.Min || at-c.firstData > est.Max) {
				how = EndTimeout
				detail = fmt.Sprintf("the program's kernel gave up after %d retransmissions, by %s after the first drop (its retransmissions stopped); not the %s the sysctl defaults predict, so its own TCP_USER_TIMEOUT or tcp_retries2 ended it — read from the peer's side, its settings are unknown",
					c.retrans[packet.In], shortSeconds(at-c.firstData), est)
			} else {
				detail += "; inferred: its retransmissions stopped"
			}
			add(at, how, "wire", detail)
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
// tcp_retries2 model, else tcp_retries2. n counts what: the kernel's RTO
// retransmissions (tcpi_retransmits: the tail-loss probe before them is
// not one, so the wire shows one more), or the retransmissions on the wire.
func (c *connTrack) retransTimeout(s TimeoutSettings, n int, what string) (how, detail string) {
	est, by := InFlightTimeout(s)
	if by == "TCP_USER_TIMEOUT" {
		return EndTimeoutUser, fmt.Sprintf("TCP_USER_TIMEOUT %s ran out after %d %s (ETIMEDOUT; theory %s)", shortSeconds(s.UserTimeout), n, what, est)
	}
	return EndTimeoutRetries, fmt.Sprintf("retransmissions exhausted: tcp_retries2=%d after %d %s (ETIMEDOUT; theory %s)", s.Retries2, n, what, est)
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
	if cr.Recovered != nil && (cr.End.How == EndOpen || cr.End.How == EndClosed || cr.End.How == EndClosedUpstream) && *cr.Recovered <= cr.End.At {
		return fmt.Sprintf("recovered %s after the first drop: the link came back before anything timed out, then it went on (%s)", shortSeconds(*cr.Recovered-hit), cr.End.How)
	}
	switch cr.End.How {
	case EndHanging:
		return fmt.Sprintf("did not notice the dead link in %s; its settings predict %s", shortSeconds(cr.End.At-hit), c.predictionSentence(cr))
	case EndOpen:
		if cr.Recovered != nil {
			return fmt.Sprintf("recovered %s after the first drop: the link came back before anything timed out", shortSeconds(*cr.Recovered-hit))
		}
		return "open at the end"
	case EndClosed, EndReset:
		if cr.End.At <= hit {
			return "the program ended it before the fault touched it; only its FIN or RST fell into the fault"
		}
		return fmt.Sprintf("the program gave up itself %s after the first drop, before the kernel's %s: it did better than its socket settings", shortSeconds(cr.End.At-hit), c.predictionSentence(cr))
	case EndTimeout:
		return fmt.Sprintf("its kernel gave up %s after the first drop, far sooner than the sysctl defaults allow: the program set its own TCP_USER_TIMEOUT (or its namespace a lower tcp_retries2)", shortSeconds(cr.End.At-hit))
	case EndTimeoutRetries, EndTimeoutUser, EndTimeoutKeep, EndTimeoutSyn:
		return fmt.Sprintf("the kernel gave up %s after the first drop (%s); the program had no faster timeout of its own", shortSeconds(cr.End.At-hit), cr.End.How)
	}
	return cr.End.Detail
}

func (c *connTrack) predictionSentence(cr *ConnReport) string {
	if !c.hasEstablished || (cr.Established != nil && *cr.Established > *cr.FaultHit) {
		return connectPhrase(cr.Settings)
	}
	if c.hasFirstData || c.retrans[packet.In] > 0 {
		return fmt.Sprintf("ETIMEDOUT %s after a request", cr.InFlight)
	}
	if cr.Idle != nil {
		return fmt.Sprintf("keepalive notices an idle connection %s", *cr.Idle)
	}
	return "that an idle connection never notices"
}

// kernelGaveUp estimates when the kernel's timer ended a connection, from
// the last sample that listed its socket and the first that did not
// (goneAt). The sample's idiag_expires says when the timer was due, but
// the timer wheel runs a timer at its bucket, later by up to its level's
// granularity (at HZ 250, 32 ms for a 0.25–2 s timer, 256 ms up to 16 s:
// what the theory's model, ktimers.go wheelFire, predicts), and the socket
// leaves the table then. So the firing lies between the later of the due
// time and that last sample (a timer still listed with 0 ms left had not
// run yet) and goneAt; the estimate is their midpoint, within half a
// sampling interval of it. Taking the due time instead made a tcp_retries2
// ending measure early by up to a granule, 18 ms below the model's
// earliest firing in one of 16 runs of TestExecReportInProcess.
func kernelGaveUp(last KernelSample, goneAt time.Duration) time.Duration {
	lo := max(last.T+last.TimerExpires, last.T)
	if lo <= 0 || lo >= goneAt {
		return goneAt
	}
	return lo + (goneAt-lo)/2
}
