package stack

import (
	"time"

	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/busypoll"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// ConnStatus is one TCP connection of a stack, as `unplug status` shows it
// (services.StackConn).
type ConnStatus = services.StackConn

// LinkStatus counts packets at the fault layer.
type LinkStatus struct {
	In          uint64 `json:"in"`
	Out         uint64 `json:"out"`
	Dropped     uint64 `json:"dropped"`
	Delayed     uint64 `json:"delayed"`
	QueueDrops  uint64 `json:"queue_drops"`
	Unparseable uint64 `json:"unparseable"`
	Pending     int    `json:"pending_delayed"`
}

// Status is a snapshot of the peer for `unplug status`.
type Status struct {
	Conns []ConnStatus       `json:"connections"`
	Rules []fault.RuleStatus `json:"rules"`
	Link  LinkStatus         `json:"link"`
	TCP   map[string]uint64  `json:"tcp"`
	// BusyPoll is the busy poller's work (--busy-poll); nil when it is off.
	BusyPoll *BusyPollStatus `json:"busy_poll,omitempty"`
}

// BusyPollStatus counts what the process's busy poller did: how often
// traffic started a polling window, how many polls it made and how often
// it parked to let the Go scheduler take an event.
type BusyPollStatus struct {
	Window  time.Duration `json:"window_ns"`
	Windows uint64        `json:"windows"`
	Polls   uint64        `json:"polls"`
	Parks   uint64        `json:"parks"`
}

// Status returns the peer's connections, rules and counters.
func (p *Peer) Status() Status {
	st := Status{Rules: p.Controller().Status(), Conns: Conns(p.Stack)}
	fs := p.Fault.Stats()
	st.Link = LinkStatus{
		In: fs.In.Load(), Out: fs.Out.Load(), Dropped: fs.Dropped.Load(), Delayed: fs.Delayed.Load(),
		QueueDrops: fs.QueueDrops.Load(), Unparseable: fs.Unparseable.Load(), Pending: p.Fault.Pending(),
	}
	if bp := busypoll.Counters(); bp != nil {
		st.BusyPoll = &BusyPollStatus{Window: busypoll.Window(), Windows: bp.Windows.Load(), Polls: bp.Polls.Load(), Parks: bp.Parks.Load()}
	}
	t := p.Stack.Stats().TCP
	st.TCP = map[string]uint64{
		"active_opens":         t.ActiveConnectionOpenings.Value(),
		"passive_opens":        t.PassiveConnectionOpenings.Value(),
		"established":          t.CurrentEstablished.Value(),
		"established_timeout":  t.EstablishedTimedout.Value(),
		"established_resets":   t.EstablishedResets.Value(),
		"segments_sent":        t.SegmentsSent.Value(),
		"segments_received":    t.ValidSegmentsReceived.Value(),
		"retransmits":          t.Retransmits.Value(),
		"timeouts":             t.Timeouts.Value(),
		"resets_sent":          t.ResetsSent.Value(),
		"resets_received":      t.ResetsReceived.Value(),
		"failed_port_reserves": t.FailedPortReservations.Value(),
		"fast_retransmits":     t.FastRetransmit.Value(),
		"tlp_recoveries":       t.TLPRecovery.Value(),
		"invalid_segments":     t.InvalidSegmentsReceived.Value(),
		"checksum_errors":      t.ChecksumErrors.Value(),
		"syn_cookies_sent":     t.ListenOverflowSynCookieSent.Value(),
		"syn_cookies_received": t.ListenOverflowSynCookieRcvd.Value(),
		"listen_syn_drops":     t.ListenOverflowSynDrop.Value(),
		"listen_ack_drops":     t.ListenOverflowAckDrop.Value(),
	}
	return st
}

// Conns lists the TCP connections of s (listeners excluded), sorted by
// local then remote address.
func Conns(s *gstack.Stack) []ConnStatus { return services.StackConns(s) }
