package scenarios

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
)

// MaxTimelinePackets bounds how many packets a report's timeline lists;
// later packets are only counted (PacketCounts.NotInTimeline).
// Retransmissions are listed in full up to the same bound.
const MaxTimelinePackets = 20000

// maxSegTimes bounds the per-flow memory of when each segment was last
// sent; beyond it the memory is cleared (a long lossy transfer then loses
// a few intervals, not correctness of the rest).
const maxSegTimes = 1 << 17

// recorder collects what happens during a scenario: it is the fault
// layer's Observer (every packet with its verdict), classifies segments
// with capture's RetransmitTracker, computes retransmission intervals and
// backoff ratios, and records the application's calls, the fault rules,
// notes and measurements. It is safe for concurrent use; Observe is cheap
// and never blocks on anything but the recorder's own lock.
//
// Scenarios receive a recorder to add measurements (Measure), notes and
// their outcome (Outcome); environments call begin with their clock before
// the first packet.
type recorder struct {
	mu    sync.Mutex
	clock tcpip.Clock
	start time.Time
	// tracker follows the TCP connections (kinds, relative sequence
	// numbers, new connections on a reused 4-tuple): package flow, the
	// tracker the fault rules and the capture use too.
	tracker *flow.Tracker

	conns    map[flow.Key]*connRec
	nconns   int
	timeline []Event
	retrans  []Retransmission
	counts   PacketCounts
	faults   []FaultWindow
	faultLog []faultLogged // parallel to faults
	appErrs  []AppError
	measures []Measurement
	// clientInfo is the client socket's TCP_INFO before the first fault.
	clientInfo *ClientInfo
	// anchorHook, if set, runs (without the lock) when the anchor is set:
	// the recording environment reads the client's TCP_INFO then if no
	// fault came first.
	anchorHook func()

	// lastApp indexes the last application event in timeline, for merging
	// consecutive successful calls; -1 once anything else but packets
	// happened since.
	lastApp int

	outcome, outcomeDetail string
	outcomeAt              time.Duration
	anchor                 time.Duration
	anchorLabel            string

	lastInterval time.Duration // for the progress line
}

// connRec is what the recorder knows about one TCP connection.
type connRec struct {
	id  int
	dir [3]*flowRec // indexed by packet.In, packet.Out
}

// flowRec is one direction of a connection: when its segments went out,
// for retransmission and probe intervals.
type flowRec struct {
	lastPkt  time.Duration     // last packet of any kind
	lastData time.Duration     // last segment occupying sequence space
	segs     map[uint32]*segTx // by starting sequence number
	probes   map[uint32]*segTx // probe series by sequence number
}

// segTx is the transmission history of one segment (or probe series).
type segTx struct {
	t        time.Duration // last transmission
	interval time.Duration // interval before it, if it was a retransmission
	n        int           // retransmissions so far
}

// newRecorder returns an empty recorder. Its clock starts when an
// environment calls begin.
func newRecorder() *recorder {
	return &recorder{
		tracker: flow.NewTracker(capture.DefaultMaxFlows),
		conns:   make(map[flow.Key]*connRec),
		lastApp: -1,
	}
}

// begin starts the scenario clock: every time in the report is relative to
// clock.Now() at this call. Environments call it once, before any packet.
func (r *recorder) begin(clock tcpip.Clock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock = clock
	r.start = clock.Now()
	r.timeline = append(r.timeline, Event{T: 0, Kind: EventStart, Text: "scenario starts"})
}

// Now returns the time since begin on the scenario's clock (0 before).
func (r *recorder) Now() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nowLocked()
}

func (r *recorder) nowLocked() time.Duration {
	if r.clock == nil {
		return 0
	}
	return r.clock.Now().Sub(r.start)
}

// Observe implements fault.Observer.
func (r *recorder) Observe(ev *fault.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := ev.Time.Sub(r.start)
	p := ev.Packet
	pk := &Packet{Dir: p.Dir.String(), Verdict: ev.Decision.Verdict.String(), Comment: ev.Comment, Proto: protoName(p), Len: p.PayloadLen}
	// A packet the fault layer made up (a reject's RST, a duplicate) is no
	// transmission of the sender's: keep it out of the retransmission
	// analysis, which would count a duplicate as a retransmission.
	var info flow.Info // KindOther unless p is TCP
	if p.IsTCP() && p.Version != 0 {
		seg := flow.SegmentOf(p)
		if ev.Decision.Verdict != fault.Injected {
			info = r.tracker.Track(&seg, 0)
		} else {
			info = r.tracker.Peek(&seg)
		}
	}
	kind := info.Kind
	pk.Kind = kind.String()
	if ev.Decision.Verdict == fault.Injected {
		pk.Kind = "injected"
	}

	c := &r.counts
	c.Total++
	in := p.Dir == packet.In
	if in {
		c.In++
	} else {
		c.Out++
	}
	switch ev.Decision.Verdict {
	case fault.Dropped:
		if in {
			c.DroppedIn++
		} else {
			c.DroppedOut++
		}
	case fault.Delayed:
		c.Delayed++
	}
	if kind != flow.KindOther {
		r.tcpLocked(t, p, pk, &info)
	}
	if c.Total-c.NotInTimeline > MaxTimelinePackets {
		c.NotInTimeline++
		return
	}
	r.timeline = append(r.timeline, Event{T: t, Kind: EventPacket, Text: packetText(pk), Conn: pk.Conn, Packet: pk})
}

// tcpLocked fills in the TCP fields of pk, updates counters and records
// retransmissions and probes.
func (r *recorder) tcpLocked(t time.Duration, p *packet.Packet, pk *Packet, info *flow.Info) {
	in := p.Dir == packet.In
	kind := info.Kind
	syn := p.Flags&packet.FlagSYN != 0
	cr := r.conns[info.Key]
	if cr == nil || info.Opened {
		r.nconns++
		cr = &connRec{id: r.nconns}
		cr.dir[packet.In], cr.dir[packet.Out] = newFlowRec(), newFlowRec()
		r.conns[info.Key] = cr
	}
	f := cr.dir[p.Dir]
	pk.Conn = cr.id
	pk.Flags = flagString(p.Flags)
	pk.Seq = info.RelSeq
	pk.Ack = info.RelAck
	pk.Win = p.Window

	segLen := p.PayloadLen
	if syn || p.Flags&packet.FlagFIN != 0 {
		segLen++
	}
	passed := pk.Verdict != fault.Dropped.String()
	if passed && p.PayloadLen > 0 {
		if in {
			r.counts.PayloadIn += int64(p.PayloadLen)
		} else {
			r.counts.PayloadOut += int64(p.PayloadLen)
		}
	}

	var series *segTx
	var prev time.Duration
	switch kind {
	case flow.KindRetransmit:
		r.counts.RetransmitsIn, r.counts.RetransmitsOut = countDir(in, r.counts.RetransmitsIn, r.counts.RetransmitsOut)
		series, prev = seriesOf(f.segs, p.Seq, f.lastData)
	case flow.KindKeepaliveProbe, flow.KindZeroWindowProbe:
		r.counts.ProbesIn, r.counts.ProbesOut = countDir(in, r.counts.ProbesIn, r.counts.ProbesOut)
		series, prev = seriesOf(f.probes, p.Seq, f.lastPkt)
	default:
		if segLen > 0 {
			if len(f.segs) >= maxSegTimes {
				clear(f.segs)
			}
			f.segs[p.Seq] = &segTx{t: t}
		}
	}
	if series != nil {
		interval := t - prev
		var ratio float64
		if series.n > 0 && series.interval > 0 {
			ratio = float64(interval) / float64(series.interval)
		}
		series.n++
		series.t, series.interval = t, interval
		pk.Interval, pk.Ratio = interval, ratio
		r.lastInterval = interval
		if len(r.retrans) < MaxTimelinePackets {
			r.retrans = append(r.retrans, Retransmission{
				T: t, Dir: pk.Dir, Conn: pk.Conn, Kind: pk.Kind, Flags: pk.Flags, Seq: pk.Seq, Len: pk.Len,
				Verdict: pk.Verdict, N: series.n, Interval: interval, Ratio: ratio,
			})
		}
	}
	if segLen > 0 {
		f.lastData = t
	}
	// A probe series' first interval counts from the sender's last packet
	// that was not itself a probe.
	if kind != flow.KindKeepaliveProbe && kind != flow.KindZeroWindowProbe {
		f.lastPkt = t
	}
}

// seriesOf returns the transmission series of the segment (or probe) at
// seq and when its previous transmission was: the series' last one, or,
// for a series starting now, since (the flow's last data or last packet).
func seriesOf(m map[uint32]*segTx, seq uint32, since time.Duration) (*segTx, time.Duration) {
	if s, ok := m[seq]; ok {
		return s, s.t
	}
	s := &segTx{}
	m[seq] = s
	return s, since
}

// countDir adds one to the inbound or the outbound counter.
func countDir(in bool, nIn, nOut int) (int, int) {
	if in {
		return nIn + 1, nOut
	}
	return nIn, nOut + 1
}

func newFlowRec() *flowRec {
	return &flowRec{segs: make(map[uint32]*segTx), probes: make(map[uint32]*segTx)}
}

func protoName(p *packet.Packet) string {
	switch {
	case p.Version == 0:
		return "other"
	case p.Proto == packet.ProtoTCP:
		return "tcp"
	case p.Proto == packet.ProtoUDP:
		return "udp"
	case p.Proto == packet.ProtoICMP:
		return "icmp"
	case p.Proto == packet.ProtoICMPv6:
		return "icmpv6"
	}
	return "other"
}

// flagString renders TCP flags as tcpdump does ("S.", "P.", "FP.").
func flagString(f uint8) string { return packet.FlagString(f) }

// packetText is the one-line description of a packet in the timeline.
func packetText(p *Packet) string {
	arrow := "client → peer"
	if p.Dir == packet.Out.String() {
		arrow = "peer → client"
	}
	if p.Proto != "tcp" {
		return fmt.Sprintf("%s %s %s", arrow, p.Proto, p.Verdict)
	}
	s := fmt.Sprintf("%s [%s] seq %d", arrow, p.Flags, p.Seq)
	if p.Len > 0 {
		s += fmt.Sprintf(":%d", p.Seq+uint32(p.Len))
	}
	if strings.Contains(p.Flags, ".") {
		s += fmt.Sprintf(" ack %d", p.Ack)
	}
	s += fmt.Sprintf(" win %d len %d", p.Win, p.Len)
	if p.Kind != "new" {
		s += " " + p.Kind
	}
	if p.Interval > 0 {
		s += fmt.Sprintf(" +%s", fmtDur(p.Interval))
		if p.Ratio > 0 {
			s += fmt.Sprintf(" ×%.2f", p.Ratio)
		}
	}
	if p.Verdict != "pass" {
		s += " " + strings.ToUpper(p.Verdict)
	}
	return s
}

// fmtDur prints a duration compactly with at most 3 significant decimals.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	}
	return d.String()
}

// eventLocked appends a non-packet event and ends call merging.
func (r *recorder) eventLocked(ev Event) {
	r.timeline = append(r.timeline, ev)
	r.lastApp = -1
}

// Event records a free-form timeline event of the given kind at the
// current time.
func (r *recorder) Event(kind string, conn int, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eventLocked(Event{T: r.nowLocked(), Kind: kind, Conn: conn, Text: fmt.Sprintf(format, args...)})
}

// Note records a free-form note in the timeline.
func (r *recorder) Note(format string, args ...any) { r.Event(EventNote, 0, format, args...) }

// Call records the result of an application socket call: op is connect,
// send, recv or close; want is how many bytes were asked for; took is how
// long the call blocked (it returned now). Socket errors also go to the
// report's errno list, except EOF and a deadline the scenario set itself.
// Consecutive complete calls (and consecutive deadline expiries) of the
// same op on the same connection merge into one event.
func (r *recorder) Call(op string, conn int, n, want int, took time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.nowLocked()
	errno := ErrnoName(err)
	deadline := isDeadline(err)
	complete := err == nil && n > 0 && (op == EventRecv || n == want)
	if (complete || deadline) && r.lastApp >= 0 {
		last := &r.timeline[r.lastApp]
		if last.Kind == op && last.Conn == conn && last.Count > 0 && (last.Errno == "EAGAIN") == deadline {
			last.Count++
			last.Bytes += int64(n)
			last.End = t
			if deadline {
				last.Text = fmt.Sprintf("%s × %d: no result before the scenario's deadline", op, last.Count)
			} else {
				last.Text = fmt.Sprintf("%s × %d: %d bytes", op, last.Count, last.Bytes)
			}
			return
		}
	}
	ev := Event{T: t, Kind: op, Conn: conn, Bytes: int64(n), Errno: errno, Took: took}
	switch {
	case complete:
		ev.Count = 1
		ev.Text = fmt.Sprintf("%s: %d bytes", op, n)
	case deadline:
		ev.Count = 1
		ev.Text = fmt.Sprintf("%s: no result before the scenario's deadline", op)
	case err == nil && op == EventSend && n < want:
		ev.Text = fmt.Sprintf("send returned a short count: %d of %d bytes", n, want)
	case err == nil && op == EventRecv && n == 0:
		ev.Text = "recv: end of file"
	case err == nil:
		ev.Text = fmt.Sprintf("%s: ok", op)
	case errno == "EOF":
		ev.Text = fmt.Sprintf("%s: end of file", op)
		ev.Errno = ""
	case errno != "":
		ev.Text = fmt.Sprintf("%s: %s", op, errno)
		r.appErrs = append(r.appErrs, AppError{T: t, Op: op, Conn: conn, Errno: errno})
	default:
		ev.Text = fmt.Sprintf("%s: %v", op, err)
	}
	if took >= time.Millisecond && ev.Count == 0 {
		ev.Text += fmt.Sprintf(" (blocked %s)", fmtDur(took))
	}
	r.timeline = append(r.timeline, ev)
	if ev.Count > 0 {
		r.lastApp = len(r.timeline) - 1
	} else {
		r.lastApp = -1
	}
}

// faultAdded records a rule installed now (its after= and for= count from
// now).
func (r *recorder) faultAdded(id int, sp fault.Spec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := r.nowLocked() + sp.After
	w := FaultWindow{ID: id, Spec: sp.String(), Start: start, End: -1, Outage: sp.Action == fault.ActDrop}
	if sp.For > 0 {
		w.End = start + sp.For
	}
	r.faults = append(r.faults, w)
	r.faultLog = append(r.faultLog, faultLogged{})
	if sp.After == 0 {
		r.eventLocked(faultOnEvent(w))
		r.faultLog[len(r.faultLog)-1].on = true
	}
}

// faultLogged says which of a window's events are already in the timeline.
type faultLogged struct{ on, off bool }

func faultOnEvent(w FaultWindow) Event {
	what := "fault"
	if w.Outage {
		what = "outage"
	}
	return Event{T: w.Start, Kind: EventFaultOn, Text: fmt.Sprintf("%s starts: rule %d: %s", what, w.ID, w.Spec)}
}

func faultOffEvent(w FaultWindow) Event {
	return Event{T: w.End, Kind: EventFaultOff, Text: fmt.Sprintf("rule %d ends: %s", w.ID, w.Spec)}
}

// faultRemoved records that rule id was removed now.
func (r *recorder) faultRemoved(id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.nowLocked()
	for i := range r.faults {
		w := &r.faults[i]
		if w.ID == id && (w.End < 0 || w.End > now) {
			w.End = now
			if w.Start > now {
				w.Start = now
			}
			r.faultLog[i].off = true
			r.eventLocked(faultOffEvent(*w))
		}
	}
	r.lastApp = -1
}

// setClientInfo records the client socket's state before the first fault.
func (r *recorder) setClientInfo(ci ClientInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clientInfo == nil {
		r.clientInfo = &ci
	}
}

// hasClientInfo reports whether setClientInfo was called.
func (r *recorder) hasClientInfo() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clientInfo != nil
}

// Measure records a measured value; a second call with the same name
// replaces the first.
func (r *recorder) Measure(name string, value float64, unit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastApp = -1
	for i := range r.measures {
		if r.measures[i].Name == name {
			r.measures[i].Value, r.measures[i].Unit = value, unit
			return
		}
	}
	r.measures = append(r.measures, Measurement{Name: name, Value: value, Unit: unit})
}

// Anchor marks now as the instant the theory counts from ("request sent",
// "outage starts"); expected times in the report are relative to it.
func (r *recorder) Anchor(label string) {
	r.mu.Lock()
	r.anchor, r.anchorLabel = r.nowLocked(), label
	r.lastApp = -1
	hook := r.anchorHook
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
}

// AnchorAt is Anchor for an earlier instant t (scenario time).
func (r *recorder) AnchorAt(t time.Duration, label string) {
	r.mu.Lock()
	r.anchor, r.anchorLabel = t, label
	r.lastApp = -1
	hook := r.anchorHook
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
}

func (r *recorder) anchorTime() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.anchor
}

func (r *recorder) anchorName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.anchorLabel == "" {
		return "the start"
	}
	return r.anchorLabel
}

// Outcome records the scenario's outcome (an errno name, or recovered,
// survived, connected) as happening now, with a one-line explanation.
// The first call wins.
func (r *recorder) Outcome(outcome, format string, args ...any) {
	r.OutcomeAt(r.Now(), outcome, format, args...)
}

// HasOutcome reports whether an outcome was recorded.
func (r *recorder) HasOutcome() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outcome != ""
}

// OutcomeAt is Outcome for an earlier instant t (scenario time), such as
// when the first byte of a late reply arrived.
func (r *recorder) OutcomeAt(t time.Duration, outcome, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outcome != "" {
		return
	}
	r.outcome, r.outcomeAt = outcome, t
	r.outcomeDetail = fmt.Sprintf(format, args...)
	r.eventLocked(Event{T: t, Kind: EventOutcome, Text: outcome + ": " + r.outcomeDetail})
}

// live is a snapshot for the progress line and for scenarios that need to
// know whether an outcome was recorded.
type live struct {
	now, anchor  time.Duration
	anchorLabel  string
	retransmits  int // retransmissions and probes, both directions
	lastInterval time.Duration
	outcome      string
	hasOutcome   bool
}

func (r *recorder) live() live {
	r.mu.Lock()
	defer r.mu.Unlock()
	return live{
		now: r.nowLocked(), anchor: r.anchor, anchorLabel: r.anchorLabel,
		retransmits:  r.counts.RetransmitsIn + r.counts.RetransmitsOut + r.counts.ProbesIn + r.counts.ProbesOut,
		lastInterval: r.lastInterval, outcome: r.outcome, hasOutcome: r.outcome != "",
	}
}

// fill copies everything recorded into rep: timeline (sorted, with fault
// on/off events), retransmissions, counts, faults, errors, measurements and
// the outcome. It ends the run at the current time.
func (r *recorder) fill(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.nowLocked()
	rep.Duration = end
	tl := append([]Event(nil), r.timeline...)
	sort.SliceStable(tl, func(i, j int) bool { return tl[i].T < tl[j].T })
	// Rule starts and expiries not logged when they happened (scheduled
	// with after=, expired by for=) go before whatever else happened at
	// the same instant.
	faults := append([]FaultWindow(nil), r.faults...)
	var late []Event
	for i := range faults {
		w := &faults[i]
		if !r.faultLog[i].on && w.Start <= end {
			late = append(late, faultOnEvent(*w))
		}
		if w.End < 0 || w.End > end {
			w.End, w.Open = end, true
			continue
		}
		if !r.faultLog[i].off {
			late = append(late, faultOffEvent(*w))
		}
	}
	sort.SliceStable(late, func(i, j int) bool {
		if late[i].T != late[j].T {
			return late[i].T < late[j].T
		}
		return late[i].Kind == EventFaultOff && late[j].Kind != EventFaultOff
	})
	merged := make([]Event, 0, len(tl)+len(late)+1)
	for len(tl) > 0 || len(late) > 0 {
		if len(late) > 0 && (len(tl) == 0 || (late[0].T <= tl[0].T && tl[0].Kind != EventStart)) {
			merged = append(merged, late[0])
			late = late[1:]
			continue
		}
		merged = append(merged, tl[0])
		tl = tl[1:]
	}
	tl = append(merged, Event{T: end, Kind: EventEnd, Text: "scenario ends"})
	rep.Timeline = tl
	rep.Faults = faults
	rep.Retransmissions = append([]Retransmission(nil), r.retrans...)
	sort.SliceStable(rep.Retransmissions, func(i, j int) bool { return rep.Retransmissions[i].T < rep.Retransmissions[j].T })
	rep.Packets = r.counts
	rep.AppErrors = append([]AppError(nil), r.appErrs...)
	if len(rep.AppErrors) > 0 {
		rep.Errno, rep.ErrnoAt = rep.AppErrors[0].Errno, rep.AppErrors[0].T
	}
	rep.Measurements = append([]Measurement(nil), r.measures...)
	rep.Outcome, rep.OutcomeAt, rep.OutcomeDetail = r.outcome, r.outcomeAt, r.outcomeDetail
	rep.Anchor, rep.AnchorLabel = r.anchor, r.anchorLabel
	if r.clientInfo != nil {
		ci := *r.clientInfo
		rep.ClientInfo = &ci
	}
	if rep.AnchorLabel == "" {
		rep.AnchorLabel = "scenario start"
	}
}

// packetCounts returns the packets seen so far, teardown included.
func (r *recorder) packetCounts() PacketCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// isDeadline reports whether err is a deadline the scenario set passing.
func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
