package scenarios

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SVG geometry.
const (
	svgW, svgH            = 960, 560
	svgLeft, svgRight     = 90, 50
	svgTop, svgBottom     = 90, 60
	svgPlotW              = svgW - svgLeft - svgRight
	svgPlotH              = svgH - svgTop - svgBottom
	svgTimePad            = 0.06 // of the run's length, after its end: the last marks stay off the edge
	svgSeqPad             = 0.12 // of the sequence range, above it: the ACK that jumps to the top stays visible
	svgMaxLabels          = 24   // interval labels at most; beyond that they would overlap
	svgLabelRoom          = 42   // px from one interval label to the next; closer ones are left out (the tooltip has them)
	svgLogCrowd           = 0.05 // auto log time: half the packets in this first fraction of the run
	svgMark               = 3.5  // half the size of a packet mark
	svgMaxTicks           = 10
	svgOutageFill         = "#9aa0a6"
	svgFaultFill          = "#fbbc04"
	svgSentColor          = "#1a73e8"
	svgRetransmitColor    = "#e37400"
	svgProbeColor         = "#9334e6"
	svgDropColor          = "#d93025"
	svgAckColor           = "#188038"
	svgOutcomeColor       = "#202124"
	svgAxisColor          = "#5f6368"
	svgGridColor          = "#e8eaed"
	svgFont               = "font-family=\"sans-serif\""
	svgClassesDescription = "sent: new segment; retransmit; probe; drop: dropped by the fault layer (with the mark of its kind); " +
		"ack: acknowledgements; outage: drop rule in force; fault: another rule in force; interval: time since the previous transmission"
)

// svgConnColors tell connections apart when a run has several (loss): the
// sent segments and acknowledgements of connection N take colour N.
var svgConnColors = []string{"#1a73e8", "#188038", "#9334e6", "#3949ab", "#12b5cb", "#c5221f", "#7cb342", "#f439a0", "#5f6368", "#795548"}

// Time axes of the SVG graph (SVGOptions.Time).
const (
	SVGTimeAuto   = ""       // log when early events would crowd the left edge, else linear
	SVGTimeLinear = "linear" // seconds, evenly
	SVGTimeLog    = "log"    // log(1 + t/t0): a run of doubling timeouts spreads evenly
)

// SVGOptions choose how WriteSVGOptions draws the graph.
type SVGOptions struct {
	// Time is the time axis: SVGTimeAuto, SVGTimeLinear or SVGTimeLog.
	Time string
}

// WriteSVG draws the time-sequence graph of the run: time on x, the
// relative sequence number of the data direction on y (the client's data,
// or the peer's when the peer is the one retransmitting, as in
// peer-retransmit and loss).
// Segments that passed are circles, retransmissions squares, probes
// triangles, and anything the fault layer dropped a red cross; the other
// side's acknowledgements are a step line; outages (drop rules in force)
// are shaded; the outcome is a vertical line. Every mark carries a class
// (sent, retransmit, probe, drop, ack, outage, fault, outcome) and a
// <title> tooltip.
func (r *Report) WriteSVG(w io.Writer) error {
	return r.WriteSVGOptions(w, SVGOptions{})
}

// WriteSVGOptions is WriteSVG with a choice of time axis: a virtual run of
// gVisor's full timeout (1088 s of doubling RTOs) puts its first ten
// retransmissions into 2 % of a linear axis, and reads well on a log one.
func (r *Report) WriteSVGOptions(w io.Writer, opts SVGOptions) error {
	switch opts.Time {
	case SVGTimeAuto, SVGTimeLinear, SVGTimeLog:
	default:
		return fmt.Errorf("svg time axis %q: use %s or %s (or empty for auto)", opts.Time, SVGTimeLinear, SVGTimeLog)
	}
	bw := bufio.NewWriter(w)
	g := newSVGGraph(r, opts)
	g.write(bw)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

type svgGraph struct {
	r        *Report
	dataDir  string
	maxT     float64 // seconds: the end of the time axis
	maxY     float64 // bytes: the top of the sequence axis
	log      bool    // log time axis
	t0       float64 // log axis: x ∝ log(1 + t/t0)
	top      int     // y of the plot's top edge
	plotH    int
	segments []svgPacket
	acks     map[int][]svgPacket // by connection
	conns    []int               // connections with acks, in order of appearance
	colors   map[int]string      // per connection, when there are several
}

type svgPacket struct {
	t float64
	p *Packet
}

func newSVGGraph(r *Report, opts SVGOptions) *svgGraph {
	g := &svgGraph{r: r, dataDir: dataDirection(r.Packets), acks: map[int][]svgPacket{}, top: svgTop, plotH: svgPlotH}
	end := r.Duration.Seconds()
	g.maxY = 1
	var times []float64
	conns := map[int]bool{}
	for i := range r.Timeline {
		ev := &r.Timeline[i]
		p := ev.Packet
		if p == nil || p.Proto != "tcp" {
			continue
		}
		t := ev.T.Seconds()
		end = math.Max(end, t)
		if p.Dir == g.dataDir {
			g.segments = append(g.segments, svgPacket{t, p})
			g.maxY = math.Max(g.maxY, float64(p.Seq)+float64(p.Len))
			conns[p.Conn] = true
			times = append(times, t)
		} else if strings.Contains(p.Flags, ".") && p.Verdict != "drop" {
			if _, ok := g.acks[p.Conn]; !ok {
				g.conns = append(g.conns, p.Conn)
			}
			g.acks[p.Conn] = append(g.acks[p.Conn], svgPacket{t, p})
			g.maxY = math.Max(g.maxY, float64(p.Ack))
			conns[p.Conn] = true
			times = append(times, t)
		}
	}
	if end <= 0 {
		end = 1
	}
	g.maxY *= 1 + svgSeqPad
	g.log = opts.Time == SVGTimeLog || (opts.Time == SVGTimeAuto && crowded(times, end))
	if g.log {
		g.t0 = end / 1e4
		g.maxT = end * (1 + 4*svgTimePad) // the same room as linear, in log units
	} else {
		g.maxT = end * (1 + svgTimePad)
	}
	if len(conns) > 1 {
		g.colors = map[int]string{}
		ids := make([]int, 0, len(conns))
		for c := range conns {
			ids = append(ids, c)
		}
		sort.Ints(ids)
		for i, c := range ids {
			g.colors[c] = svgConnColors[i%len(svgConnColors)]
		}
		g.top += 18 // room for the connections' legend row
		g.plotH -= 18
	}
	return g
}

// crowded reports whether a linear time axis would squeeze the run's
// packets against its left edge: at least 8 of them, and half, in its
// first svgLogCrowd.
func crowded(times []float64, end float64) bool {
	early := 0
	for _, t := range times {
		if t <= end*svgLogCrowd {
			early++
		}
	}
	return early >= 8 && 2*early >= len(times)
}

// connColor is the colour of connection c's sent segments and ACKs.
func (g *svgGraph) connColor(c int, def string) string {
	if col, ok := g.colors[c]; ok {
		return col
	}
	return def
}

// dataDirection picks the direction the graph shows: the one that
// retransmitted or probed more (that is the story), else the one that sent
// more data; the client's on a tie.
func dataDirection(c PacketCounts) string {
	in, out := c.RetransmitsIn+c.ProbesIn, c.RetransmitsOut+c.ProbesOut
	if out > in || (out == in && c.PayloadOut > c.PayloadIn) {
		return "out"
	}
	return "in"
}

func (g *svgGraph) x(t float64) float64 {
	if g.log {
		return svgLeft + math.Log1p(math.Max(t, 0)/g.t0)/math.Log1p(g.maxT/g.t0)*svgPlotW
	}
	return svgLeft + t/g.maxT*svgPlotW
}

func (g *svgGraph) y(v float64) float64 { return float64(g.top+g.plotH) - v/g.maxY*float64(g.plotH) }

// timeTicks returns the tick values of the time axis: 1-2-5 steps, or on a
// log axis 0 and the 1-2-5 values of each decade that are at least 40 px
// apart.
func (g *svgGraph) timeTicks() (ticks []float64, step float64) {
	if !g.log {
		step = niceStep(g.maxT)
		for v := 0.0; v <= g.maxT+step/1e6; v += step {
			ticks = append(ticks, v)
		}
		return ticks, step
	}
	ticks = []float64{0}
	last := g.x(0)
	for e := math.Floor(math.Log10(g.t0)); ; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v > g.maxT {
				return ticks, 0
			}
			if x := g.x(v); x-last >= 40 {
				ticks, last = append(ticks, v), x
			}
		}
	}
}

func (g *svgGraph) write(w io.Writer) {
	r := g.r
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s font-size="12">`+"\n",
		svgW, svgH, svgW, svgH, svgFont)
	fmt.Fprintf(w, "<desc>%s</desc>\n", esc(svgClassesDescription))
	fmt.Fprintf(w, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	title := fmt.Sprintf("unplug run %s", r.Scenario)
	if r.Outcome != "" {
		title += fmt.Sprintf(" — %s at %.3f s", r.Outcome, r.OutcomeAt.Seconds())
	}
	fmt.Fprintf(w, `<text class="title" x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", svgLeft, esc(title))
	var ps []string
	for _, p := range r.Params {
		ps = append(ps, p.Name+"="+p.Value)
	}
	fmt.Fprintf(w, `<text class="subtitle" x="%d" y="42" fill="%s">%s</text>`+"\n", svgLeft, svgAxisColor,
		esc(fmt.Sprintf("%s client, %s clock. %s", r.Client, r.Clock, strings.Join(ps, " "))))

	g.writeFaults(w)
	g.writeAxes(w)
	g.writeAcks(w)
	g.writeSegments(w)
	g.writeOutcome(w)
	g.writeLegend(w)
	fmt.Fprintln(w, "</svg>")
}

// writeFaults shades the windows in which fault rules were in force.
func (g *svgGraph) writeFaults(w io.Writer) {
	for _, f := range g.r.Faults {
		x0, x1 := g.x(f.Start.Seconds()), g.x(f.End.Seconds())
		class, fill, op := "fault", svgFaultFill, 0.15
		if f.Outage {
			class, fill, op = "outage", svgOutageFill, 0.3
		}
		fmt.Fprintf(w, `<rect class="%s" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="%.2f"><title>%s</title></rect>`+"\n",
			class, x0, g.top, math.Max(x1-x0, 1), g.plotH, fill, op,
			esc(fmt.Sprintf("rule %d: %s, %.3f–%.3f s", f.ID, f.Spec, f.Start.Seconds(), f.End.Seconds())))
		fmt.Fprintf(w, `<text class="%s-label" x="%.1f" y="%d" fill="%s" font-size="11">%s</text>`+"\n",
			class, x0+3, g.top+14, svgAxisColor, esc(f.Spec))
	}
}

// niceStep returns a 1-2-5 step giving at most svgMaxTicks ticks over span.
func niceStep(span float64) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / svgMaxTicks
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

func formatTick(v, step float64) string {
	if step >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	decimals := int(math.Ceil(-math.Log10(step)))
	return fmt.Sprintf("%.*f", decimals, v)
}

// byteStep is niceStep in whole bytes, KiB or MiB.
func byteStep(span float64) float64 {
	switch {
	case span >= 4<<20:
		return niceStep(span/(1<<20)) * (1 << 20)
	case span >= 4<<10:
		return niceStep(span/(1<<10)) * (1 << 10)
	}
	return math.Max(1, math.Ceil(niceStep(span)))
}

func formatByteTick(v float64) string {
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%.4gM", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.4gK", v/(1<<10))
	}
	return fmt.Sprintf("%.0f", v)
}

func (g *svgGraph) writeAxes(w io.Writer) {
	top, bottom := g.top, g.top+g.plotH
	fmt.Fprintf(w, `<g class="axes" stroke="%s">`+"\n", svgAxisColor)
	ticks, step := g.timeTicks()
	for _, v := range ticks {
		x := g.x(v)
		label := formatTick(v, step)
		if g.log {
			label = strconv.FormatFloat(roundSig(v, 3), 'f', -1, 64)
		}
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, top, x, bottom, svgGridColor)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle" stroke="none" fill="%s">%s</text>`+"\n",
			x, bottom+16, svgAxisColor, label)
	}
	ystep := byteStep(g.maxY)
	for v := 0.0; v <= g.maxY+ystep/1e6; v += ystep {
		y := g.y(v)
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", svgLeft, y, svgLeft+svgPlotW, y, svgGridColor)
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" stroke="none" fill="%s">%s</text>`+"\n",
			svgLeft-6, y+4, svgAxisColor, formatByteTick(v))
	}
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", svgLeft, bottom, svgLeft+svgPlotW, bottom)
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", svgLeft, top, svgLeft, bottom)
	fmt.Fprintln(w, "</g>")
	xlabel := "time since the start (s)"
	if g.log {
		xlabel = "time since the start (s, log scale)"
	}
	fmt.Fprintf(w, `<text class="xlabel" x="%d" y="%d" text-anchor="middle" fill="%s">%s</text>`+"\n",
		svgLeft+svgPlotW/2, svgH-18, svgAxisColor, xlabel)
	who := "client → peer"
	if g.dataDir == "out" {
		who = "peer → client"
	}
	fmt.Fprintf(w, `<text class="ylabel" transform="translate(20 %d) rotate(-90)" text-anchor="middle" fill="%s">relative sequence number, %s (bytes)</text>`+"\n",
		top+g.plotH/2, svgAxisColor, esc(who))
}

// writeAcks draws each connection's acknowledgements as a step line.
func (g *svgGraph) writeAcks(w io.Writer) {
	for _, c := range g.conns {
		acks := g.acks[c]
		var pts []string
		prev := -1.0
		for _, a := range acks {
			x, y := g.x(a.t), g.y(float64(a.p.Ack))
			if prev >= 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, prev))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			prev = y
		}
		if prev >= 0 && g.colors == nil { // one connection: its last ACK holds to the end
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", g.x(g.maxT), prev))
		}
		fmt.Fprintf(w, `<polyline class="ack" points="%s" fill="none" stroke="%s" stroke-width="1.5"><title>%s</title></polyline>`+"\n",
			strings.Join(pts, " "), g.connColor(c, svgAckColor), esc(fmt.Sprintf("acknowledgements, connection %d", c)))
	}
}

// writeSegments draws one mark per segment of the data direction: its
// kind's mark (hollow and crossed out when the fault layer dropped it),
// the interval since the previous transmission next to retransmissions and
// probes, and each connection's number at its first segment when there
// are several.
func (g *svgGraph) writeSegments(w io.Writer) {
	labels := 0
	for _, s := range g.segments {
		if s.p.Interval > 0 {
			labels++
		}
	}
	labelled := map[int]bool{}
	lastLabel := math.Inf(-1)
	for _, s := range g.segments {
		p := s.p
		x := g.x(s.t)
		y0, y1 := g.y(float64(p.Seq)), g.y(float64(p.Seq)+float64(p.Len))
		class, color := "sent", g.connColor(p.Conn, svgSentColor)
		switch p.Kind {
		case "retransmit":
			class, color = "retransmit", svgRetransmitColor
		case "keepalive-probe", "zero-window-probe":
			class, color = "probe", svgProbeColor
		}
		tip := esc(fmt.Sprintf("%.6f s: %s", s.t, packetText(p)))
		if p.Len > 0 {
			fmt.Fprintf(w, `<line class="extent" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, y0, x, y1, color)
		}
		y := y1
		dropped := p.Verdict == "drop"
		if dropped {
			fmt.Fprintf(w, `<g class="drop %s"><title>%s</title>`, class, tip)
			fmt.Fprint(w, kindMark(class, x, y, color, true))
			d := svgMark
			fmt.Fprintf(w, `<path d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f" stroke="%s" stroke-width="2"/></g>`+"\n",
				x-d, y-d, x+d, y+d, x-d, y+d, x+d, y-d, svgDropColor)
		} else {
			fmt.Fprintf(w, `<g class="%s"><title>%s</title>%s</g>`+"\n", class, tip, kindMark(class, x, y, color, false))
		}
		if p.Interval > 0 && labels <= svgMaxLabels && x >= lastLabel+svgLabelRoom {
			lastLabel = x
			fmt.Fprintf(w, `<text class="interval" x="%.1f" y="%.1f" font-size="10" fill="%s">+%s</text>`+"\n",
				x+svgMark+2, y-svgMark-2, color, esc(shortDuration(p.Interval)))
		}
		if g.colors != nil && !labelled[p.Conn] {
			labelled[p.Conn] = true
			fmt.Fprintf(w, `<text class="conn-label" x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="%s">c%d</text>`+"\n",
				x, y-svgMark-3, g.connColor(p.Conn, svgSentColor), p.Conn)
		}
	}
}

// kindMark is the mark of a segment kind at (x, y): a circle (sent), a
// square (retransmit) or a triangle (probe), filled, or hollow for a
// dropped one (its red cross goes over it).
func kindMark(class string, x, y float64, color string, hollow bool) string {
	paint := fmt.Sprintf(`fill="%s"`, color)
	if hollow {
		paint = fmt.Sprintf(`fill="white" stroke="%s" stroke-width="1.2"`, color)
	}
	m := svgMark
	switch class {
	case "sent":
		return fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="%.1f" %s/>`, x, y, m*0.8, paint)
	case "retransmit":
		if hollow {
			m += 1.5
		}
		return fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" %s/>`, x-m, y-m, 2*m, 2*m, paint)
	}
	if hollow {
		m += 2
	}
	return fmt.Sprintf(`<path d="M%.1f %.1fL%.1f %.1fL%.1f %.1fZ" %s/>`, x, y-m-1, x+m+1, y+m, x-m-1, y+m, paint)
}

// shortDuration prints d in at most three digits: 216ms, 1.73s, 248s.
func shortDuration(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Round(time.Millisecond).Milliseconds(), 10) + "ms"
	}
	return strconv.FormatFloat(roundSig(d.Seconds(), 3), 'f', -1, 64) + "s"
}

// roundSig rounds v to n significant digits.
func roundSig(v float64, n int) float64 {
	if v == 0 {
		return 0
	}
	p := math.Pow(10, float64(n)-math.Ceil(math.Log10(math.Abs(v))))
	return math.Round(v*p) / p
}

func (g *svgGraph) writeOutcome(w io.Writer) {
	r := g.r
	if r.Outcome == "" {
		return
	}
	x := g.x(r.OutcomeAt.Seconds())
	fmt.Fprintf(w, `<line class="outcome" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"><title>%s</title></line>`+"\n",
		x, g.top, x, g.top+g.plotH, svgOutcomeColor, esc(r.OutcomeDetail))
	anchor := "end"
	if x < svgLeft+svgPlotW/2 {
		anchor = "start"
	}
	dx := -4.0
	if anchor == "start" {
		dx = 4
	}
	fmt.Fprintf(w, `<text class="outcome-label" x="%.1f" y="%d" text-anchor="%s" font-weight="bold">%s</text>`+"\n",
		x+dx, g.top+14, anchor, esc(r.Outcome))
}

func (g *svgGraph) writeLegend(w io.Writer) {
	m := svgMark
	items := []struct{ mark, label string }{
		{fmt.Sprintf(`<circle r="%.1f" fill="%s"/>`, m*0.8, svgSentColor), "sent"},
		{fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, -m, -m, 2*m, 2*m, svgRetransmitColor), "retransmitted (+interval)"},
		{fmt.Sprintf(`<path d="M0 %.1fL%.1f %.1fL%.1f %.1fZ" fill="%s"/>`, -m-1, m+1, m, -m-1, m, svgProbeColor), "probe"},
		{kindMark("probe", 0, 0, svgProbeColor, true) + fmt.Sprintf(`<path d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f" stroke="%s" stroke-width="2"/>`,
			-m, -m, m, m, -m, m, m, -m, svgDropColor), "dropped (over its kind)"},
		{fmt.Sprintf(`<rect x="-7" y="-1.5" width="14" height="3" fill="%s"/>`, svgAckColor), "acks"},
		{fmt.Sprintf(`<rect x="-7" y="-5" width="14" height="10" fill="%s" fill-opacity="0.3"/>`, svgOutageFill), "outage"},
	}
	for _, f := range g.r.Faults {
		if !f.Outage {
			items = append(items, struct{ mark, label string }{
				fmt.Sprintf(`<rect x="-7" y="-5" width="14" height="10" fill="%s" fill-opacity="0.3"/>`, svgFaultFill), "other rule in force"})
			break
		}
	}
	fmt.Fprintln(w, `<g class="legend">`)
	x, y := svgLeft+6, 64
	for _, it := range items {
		fmt.Fprintf(w, `<g transform="translate(%d %d)">%s</g>`+"\n", x, y, it.mark)
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", x+12, y+4, svgAxisColor, esc(it.label))
		x += 30 + 6*len([]rune(it.label))
	}
	if g.colors != nil {
		ids := make([]int, 0, len(g.colors))
		for c := range g.colors {
			ids = append(ids, c)
		}
		sort.Ints(ids)
		x, y = svgLeft+6, 82
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="%s">connections:</text>`+"\n", x, y+4, svgAxisColor)
		x += 84
		for _, c := range ids {
			fmt.Fprintf(w, `<g class="conn-key"><rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" fill="%s">c%d</text></g>`+"\n",
				x, y-5, g.colors[c], x+13, y+4, svgAxisColor, c)
			x += 40
		}
	}
	fmt.Fprintln(w, "</g>")
}

func esc(s string) string { return html.EscapeString(s) }
