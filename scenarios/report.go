package scenarios

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Outcomes other than an errno name. A scenario's outcome is either one of
// these or the errno the application got (ETIMEDOUT, EPIPE, ECONNRESET...).
const (
	// OutcomeRecovered: data was delayed by the fault but all of it arrived.
	OutcomeRecovered = "recovered"
	// OutcomeSurvived: the connection outlived the fault without the
	// application seeing any error.
	OutcomeSurvived = "survived"
	// OutcomeConnected: connect() succeeded despite the fault.
	OutcomeConnected = "connected"
)

// Verdicts.
const (
	VerdictPass  = "pass"  // every expectation met
	VerdictFail  = "fail"  // at least one expectation not met
	VerdictError = "error" // the scenario could not run to the end
)

// Report is everything one scenario run produced: what was run with which
// parameters, what happened when (the timeline), what the application got,
// and theory next to measurement. The table, the JSON document and the SVG
// graph are all renderings of it. Times are on the scenario's clock,
// relative to its start; everything that depends on the wall clock is in
// Wall, so a virtual-time report is reproducible byte for byte.
type Report struct {
	Scenario    string `json:"scenario"`
	Description string `json:"description"`
	Clock       string `json:"clock"`  // "real" or "virtual"
	Client      string `json:"client"` // "kernel" (host TCP) or "gvisor"
	Seed        uint64 `json:"seed"`
	// LinkDelay is the virtual link's one-way delay (virtual clock only).
	LinkDelay time.Duration `json:"link_delay_ns,omitempty"`
	Params    []ParamValue  `json:"params"`
	// Duration is how long the scenario ran, on its clock.
	Duration time.Duration `json:"duration_ns"`
	// Anchor is the instant the theory counts from (the request sent into
	// the dead link, the outage start...), described by AnchorLabel.
	Anchor      time.Duration `json:"anchor_ns"`
	AnchorLabel string        `json:"anchor"`
	// ClientInfo is the client socket's RTT and RTO (TCP_INFO) read just
	// before the first fault rule: what the theory's timers start from.
	// Absent when the fault came before any connection (syn-timeout).
	ClientInfo *ClientInfo `json:"client_info,omitempty"`

	// Outcome is what happened to the application in the end: an errno
	// name or recovered / survived / connected; OutcomeAt is when.
	Outcome       string        `json:"outcome"`
	OutcomeAt     time.Duration `json:"outcome_ns"`
	OutcomeDetail string        `json:"outcome_detail"`
	// Expected is the outcome the theory predicts for these parameters.
	Expected string `json:"expected_outcome"`
	// Errno is the first errno the application got ("" if none), ErrnoAt
	// when; AppErrors lists every one in order.
	Errno     string        `json:"errno"`
	ErrnoAt   time.Duration `json:"errno_ns"`
	AppErrors []AppError    `json:"app_errors"`

	Verdict      string        `json:"verdict"`
	Expectations []Expectation `json:"expectations"`
	Measurements []Measurement `json:"measurements"`

	Faults          []FaultWindow    `json:"faults"`
	Retransmissions []Retransmission `json:"retransmissions"`
	Packets         PacketCounts     `json:"packets"`
	Timeline        []Event          `json:"timeline"`

	// Exec is the program and its connections, for `unplug exec --report`
	// and `unplug report` (absent in scenario reports).
	Exec *ExecInfo `json:"exec,omitempty"`

	// Error is why the scenario stopped early (Verdict "error").
	Error string `json:"error,omitempty"`
	Wall  Wall   `json:"wall"`
}

// Wall holds the only wall-clock-dependent fields of a report.
type Wall struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Speedup is scenario time over wall time, in virtual mode.
	Speedup float64 `json:"speedup,omitempty"`
}

// AppError is one errno the application got from a socket call.
type AppError struct {
	T     time.Duration `json:"t_ns"`
	Op    string        `json:"op"` // connect, send, recv
	Conn  int           `json:"conn"`
	Errno string        `json:"errno"`
}

// Measurement is a value the scenario measured, for the expectations table
// and for scripts.
type Measurement struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"` // "s", "bytes", "B/s", "count", "ratio" or ""
}

// Expectation is one row of theory versus measurement.
type Expectation struct {
	Name     string `json:"name"`
	Theory   string `json:"theory"`
	Measured string `json:"measured"`
	Pass     bool   `json:"pass"`
	// Timing marks rows that depend on timer precision and machine load
	// (absolute times): shown with a tolerance, never asserted by tests.
	Timing bool   `json:"timing"`
	Basis  string `json:"basis,omitempty"` // where the theory comes from
	// Numeric rows also carry the numbers: the theory's value, the
	// accepted range and the measured value (absent if not measured).
	Unit string   `json:"unit,omitempty"`
	Want *float64 `json:"want,omitempty"`
	Min  *float64 `json:"min,omitempty"`
	Max  *float64 `json:"max,omitempty"`
	Got  *float64 `json:"got,omitempty"`
}

// FaultWindow is a fault rule and when it was in force.
type FaultWindow struct {
	ID    int           `json:"id"`
	Spec  string        `json:"spec"`
	Start time.Duration `json:"start_ns"`
	End   time.Duration `json:"end_ns"`
	// Open means the rule was still in force when the scenario ended (End
	// is then the end of the run).
	Open bool `json:"open"`
	// Outage means a drop rule: the link was dead for the packets it
	// selects. The SVG shades these windows.
	Outage bool `json:"outage"`
}

// Retransmission is a segment sent again, or a probe (keepalive or
// zero-window), with the time since the previous transmission of the same
// segment and that interval's ratio to the previous interval: the backoff.
type Retransmission struct {
	T       time.Duration `json:"t_ns"`
	Dir     string        `json:"dir"` // "in" (client to peer) or "out"
	Conn    int           `json:"conn"`
	Kind    string        `json:"kind"` // retransmit, keepalive-probe, zero-window-probe
	Flags   string        `json:"flags"`
	Seq     uint32        `json:"seq"` // relative to the sender's initial sequence number
	Len     int           `json:"len"`
	Verdict string        `json:"verdict"` // pass, drop, delay
	// N counts the retransmissions of this segment (probes: of this
	// probe series), from 1.
	N        int           `json:"n"`
	Interval time.Duration `json:"interval_ns"`
	// Ratio is Interval over the previous Interval of the same series; 0
	// for the first.
	Ratio float64 `json:"ratio"`
}

// PacketCounts summarizes every packet the fault layer saw. In is towards
// the peer (sent by the client), Out from the peer.
type PacketCounts struct {
	Total          int   `json:"total"`
	In             int   `json:"in"`
	Out            int   `json:"out"`
	DroppedIn      int   `json:"dropped_in"`
	DroppedOut     int   `json:"dropped_out"`
	Delayed        int   `json:"delayed"`
	RetransmitsIn  int   `json:"retransmits_in"`
	RetransmitsOut int   `json:"retransmits_out"`
	ProbesIn       int   `json:"probes_in"`
	ProbesOut      int   `json:"probes_out"`
	PayloadIn      int64 `json:"payload_bytes_in"`
	PayloadOut     int64 `json:"payload_bytes_out"`
	// NotInTimeline counts packets left out of the timeline because it
	// reached MaxTimelinePackets; they are still counted here.
	NotInTimeline int `json:"not_in_timeline"`
}

// Event kinds in a report's timeline.
const (
	EventStart    = "start"
	EventSysctl   = "sysctl"
	EventFaultOn  = "fault-on"
	EventFaultOff = "fault-off"
	EventConnect  = "connect"
	EventAccepted = "accepted"
	EventSend     = "send"
	EventRecv     = "recv"
	EventClose    = "close"
	EventWait     = "wait"
	EventPeer     = "peer"
	EventPacket   = "packet"
	EventNote     = "note"
	EventOutcome  = "outcome"
	EventEnd      = "end"
)

// Event is one timeline entry. Application calls (connect, send, recv)
// carry Conn, Bytes, Errno and Took (how long the call blocked; T is when it
// returned). Consecutive successful calls of the same kind are merged:
// Count calls, the last returning at End. Packets carry Packet.
type Event struct {
	T      time.Duration `json:"t_ns"`
	Kind   string        `json:"kind"`
	Text   string        `json:"text"`
	Conn   int           `json:"conn,omitempty"`
	Bytes  int64         `json:"bytes,omitempty"`
	Errno  string        `json:"errno,omitempty"`
	Took   time.Duration `json:"took_ns,omitempty"`
	Count  int           `json:"count,omitempty"`
	End    time.Duration `json:"end_ns,omitempty"`
	Packet *Packet       `json:"packet,omitempty"`
}

// Packet is one packet seen by the fault layer, with its verdict.
type Packet struct {
	Dir     string `json:"dir"`   // "in" (client to peer) or "out"
	Proto   string `json:"proto"` // tcp, udp, icmp, icmpv6, other
	Conn    int    `json:"conn,omitempty"`
	Flags   string `json:"flags,omitempty"` // S, A, P, F, R, U, E, C as tcpdump prints them
	Seq     uint32 `json:"seq"`             // relative to the sender's initial sequence number
	Ack     uint32 `json:"ack"`             // relative to the receiver's
	Len     int    `json:"len"`             // TCP payload bytes
	Win     uint16 `json:"win"`
	Verdict string `json:"verdict"` // pass, drop, delay
	// Kind is new, retransmit, keepalive-probe, zero-window-probe or other.
	Kind string `json:"kind"`
	// Interval and Ratio are set on retransmissions and probes, as in
	// Retransmission.
	Interval time.Duration `json:"interval_ns,omitempty"`
	Ratio    float64       `json:"ratio,omitempty"`
	Comment  string        `json:"comment,omitempty"`
}

// WriteJSON writes the report as one indented JSON document; see
// docs/report-schema.md for the schema.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	c := *r
	c.normalize()
	if err := enc.Encode(&c); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// normalize makes every list non-nil, so JSON shows [] rather than null.
func (r *Report) normalize() {
	orEmpty(&r.Params)
	orEmpty(&r.AppErrors)
	orEmpty(&r.Expectations)
	orEmpty(&r.Measurements)
	orEmpty(&r.Faults)
	orEmpty(&r.Retransmissions)
	orEmpty(&r.Timeline)
}

func orEmpty[T any](s *[]T) {
	if *s == nil {
		*s = []T{}
	}
}

// ValidateExpect checks an expected outcome: an errno name (ETIMEDOUT,
// EPIPE, ECONNRESET...) or recovered, survived or connected. The error is
// one line listing what is accepted.
func ValidateExpect(expect string) error {
	switch strings.ToLower(expect) {
	case OutcomeRecovered, OutcomeSurvived, OutcomeConnected:
		return nil
	}
	if isErrnoName(expect) {
		return nil
	}
	return fmt.Errorf("expected outcome %q: use an errno name such as ETIMEDOUT, EPIPE or ECONNRESET, or recovered, survived or connected", expect)
}

// Met reports whether the run met expect: for recovered, survived and
// connected, whether that was the outcome; for an errno name, whether the
// application got that errno at all (as the outcome or on the way, as
// sendbuf-full's ETIMEDOUT before its final EPIPE). An invalid expect is an
// error (see ValidateExpect).
func (r *Report) Met(expect string) (bool, error) {
	if err := ValidateExpect(expect); err != nil {
		return false, err
	}
	if strings.EqualFold(r.Outcome, expect) {
		return true, nil
	}
	switch strings.ToLower(expect) {
	case OutcomeRecovered, OutcomeSurvived, OutcomeConnected:
		return false, nil
	}
	for _, e := range r.AppErrors {
		if strings.EqualFold(e.Errno, expect) {
			return true, nil
		}
	}
	return false, nil
}

// Measurement returns the named measurement.
func (r *Report) Measurement(name string) (Measurement, bool) {
	for _, m := range r.Measurements {
		if m.Name == name {
			return m, true
		}
	}
	return Measurement{}, false
}

// Expectation returns the named expectation row.
func (r *Report) Expectation(name string) (Expectation, bool) {
	for _, e := range r.Expectations {
		if e.Name == name {
			return e, true
		}
	}
	return Expectation{}, false
}

// seconds formats d as seconds with millisecond precision: "6.625 s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.3f s", d.Seconds())
}
