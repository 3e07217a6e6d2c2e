package scenarios

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// SVG geometry.
const (
	svgW, svgH            = 960, 560
	svgLeft, svgRight     = 90, 30
	svgTop, svgBottom     = 90, 60
	svgPlotW              = svgW - svgLeft - svgRight
	svgPlotH              = svgH - svgTop - svgBottom
	svgMark               = 3.5 // half the size of a packet mark
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
	svgClassesDescription = "sent: new segment; retransmit; probe; drop: dropped by the fault layer; ack: acknowledgements; outage: drop rule in force"
)

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
	bw := bufio.NewWriter(w)
	g := newSVGGraph(r)
	g.write(bw)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

type svgGraph struct {
	r        *Report
	dataDir  string
	maxT     float64 // seconds
	maxY     float64 // bytes
	segments []svgPacket
	acks     map[int][]svgPacket // by connection
	conns    []int
}

type svgPacket struct {
	t float64
	p *Packet
}

func newSVGGraph(r *Report) *svgGraph {
	g := &svgGraph{r: r, dataDir: dataDirection(r.Packets), acks: map[int][]svgPacket{}}
	g.maxT = r.Duration.Seconds()
	g.maxY = 1
	for i := range r.Timeline {
		ev := &r.Timeline[i]
		p := ev.Packet
		if p == nil || p.Proto != "tcp" {
			continue
		}
		t := ev.T.Seconds()
		g.maxT = math.Max(g.maxT, t)
		if p.Dir == g.dataDir {
			g.segments = append(g.segments, svgPacket{t, p})
			g.maxY = math.Max(g.maxY, float64(p.Seq)+float64(p.Len))
		} else if strings.Contains(p.Flags, ".") && p.Verdict != "drop" {
			if _, ok := g.acks[p.Conn]; !ok {
				g.conns = append(g.conns, p.Conn)
			}
			g.acks[p.Conn] = append(g.acks[p.Conn], svgPacket{t, p})
			g.maxY = math.Max(g.maxY, float64(p.Ack))
		}
	}
	if g.maxT <= 0 {
		g.maxT = 1
	}
	return g
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

func (g *svgGraph) x(t float64) float64 { return svgLeft + t/g.maxT*svgPlotW }
func (g *svgGraph) y(v float64) float64 { return svgTop + svgPlotH - v/g.maxY*svgPlotH }

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
			class, x0, svgTop, math.Max(x1-x0, 1), svgPlotH, fill, op,
			esc(fmt.Sprintf("rule %d: %s, %.3f–%.3f s", f.ID, f.Spec, f.Start.Seconds(), f.End.Seconds())))
		fmt.Fprintf(w, `<text class="%s-label" x="%.1f" y="%d" fill="%s" font-size="11">%s</text>`+"\n",
			class, x0+3, svgTop+14, svgAxisColor, esc(f.Spec))
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
	fmt.Fprintf(w, `<g class="axes" stroke="%s">`+"\n", svgAxisColor)
	step := niceStep(g.maxT)
	for v := 0.0; v <= g.maxT+step/1e6; v += step {
		x := g.x(v)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, svgTop, x, svgTop+svgPlotH, svgGridColor)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle" stroke="none" fill="%s">%s</text>`+"\n",
			x, svgTop+svgPlotH+16, svgAxisColor, formatTick(v, step))
	}
	ystep := byteStep(g.maxY)
	for v := 0.0; v <= g.maxY+ystep/1e6; v += ystep {
		y := g.y(v)
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", svgLeft, y, svgLeft+svgPlotW, y, svgGridColor)
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" stroke="none" fill="%s">%s</text>`+"\n",
			svgLeft-6, y+4, svgAxisColor, formatByteTick(v))
	}
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", svgLeft, svgTop+svgPlotH, svgLeft+svgPlotW, svgTop+svgPlotH)
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", svgLeft, svgTop, svgLeft, svgTop+svgPlotH)
	fmt.Fprintln(w, "</g>")
	fmt.Fprintf(w, `<text class="xlabel" x="%d" y="%d" text-anchor="middle" fill="%s">time since the start (s)</text>`+"\n",
		svgLeft+svgPlotW/2, svgH-18, svgAxisColor)
	who := "client → peer"
	if g.dataDir == "out" {
		who = "peer → client"
	}
	fmt.Fprintf(w, `<text class="ylabel" transform="translate(20 %d) rotate(-90)" text-anchor="middle" fill="%s">relative sequence number, %s (bytes)</text>`+"\n",
		svgTop+svgPlotH/2, svgAxisColor, esc(who))
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
		if prev >= 0 {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", g.x(g.maxT), prev))
		}
		fmt.Fprintf(w, `<polyline class="ack" points="%s" fill="none" stroke="%s" stroke-width="1.5"><title>%s</title></polyline>`+"\n",
			strings.Join(pts, " "), svgAckColor, esc(fmt.Sprintf("acknowledgements, connection %d", c)))
	}
}

// writeSegments draws one mark per segment of the data direction.
func (g *svgGraph) writeSegments(w io.Writer) {
	for _, s := range g.segments {
		p := s.p
		x := g.x(s.t)
		y0, y1 := g.y(float64(p.Seq)), g.y(float64(p.Seq)+float64(p.Len))
		class, color := "sent", svgSentColor
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
		if p.Verdict == "drop" {
			d := svgMark
			fmt.Fprintf(w, `<path class="drop %s" d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f" stroke="%s" stroke-width="2"><title>%s</title></path>`+"\n",
				class, x-d, y-d, x+d, y+d, x-d, y+d, x+d, y-d, svgDropColor, tip)
			continue
		}
		switch class {
		case "sent":
			fmt.Fprintf(w, `<circle class="sent" cx="%.1f" cy="%.1f" r="%.1f" fill="%s"><title>%s</title></circle>`+"\n", x, y, svgMark*0.8, color, tip)
		case "retransmit":
			fmt.Fprintf(w, `<rect class="retransmit" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				x-svgMark, y-svgMark, 2*svgMark, 2*svgMark, color, tip)
		default:
			fmt.Fprintf(w, `<path class="probe" d="M%.1f %.1fL%.1f %.1fL%.1f %.1fZ" fill="%s"><title>%s</title></path>`+"\n",
				x, y-svgMark-1, x+svgMark+1, y+svgMark, x-svgMark-1, y+svgMark, color, tip)
		}
	}
}

func (g *svgGraph) writeOutcome(w io.Writer) {
	r := g.r
	if r.Outcome == "" {
		return
	}
	x := g.x(r.OutcomeAt.Seconds())
	fmt.Fprintf(w, `<line class="outcome" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"><title>%s</title></line>`+"\n",
		x, svgTop, x, svgTop+svgPlotH, svgOutcomeColor, esc(r.OutcomeDetail))
	anchor := "end"
	if x < svgLeft+svgPlotW/2 {
		anchor = "start"
	}
	dx := -4.0
	if anchor == "start" {
		dx = 4
	}
	fmt.Fprintf(w, `<text class="outcome-label" x="%.1f" y="%d" text-anchor="%s" font-weight="bold">%s</text>`+"\n",
		x+dx, svgTop+30, anchor, esc(r.Outcome))
}

func (g *svgGraph) writeLegend(w io.Writer) {
	m := svgMark
	items := []struct{ mark, label string }{
		{fmt.Sprintf(`<circle r="%.1f" fill="%s"/>`, m*0.8, svgSentColor), "sent"},
		{fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, -m, -m, 2*m, 2*m, svgRetransmitColor), "retransmitted"},
		{fmt.Sprintf(`<path d="M0 %.1fL%.1f %.1fL%.1f %.1fZ" fill="%s"/>`, -m-1, m+1, m, -m-1, m, svgProbeColor), "probe"},
		{fmt.Sprintf(`<path d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f" stroke="%s" stroke-width="2"/>`, -m, -m, m, m, -m, m, m, -m, svgDropColor), "dropped"},
		{fmt.Sprintf(`<rect x="-7" y="-1.5" width="14" height="3" fill="%s"/>`, svgAckColor), "acknowledgements"},
		{fmt.Sprintf(`<rect x="-7" y="-5" width="14" height="10" fill="%s" fill-opacity="0.3"/>`, svgOutageFill), "outage"},
	}
	fmt.Fprintln(w, `<g class="legend">`)
	x, y := svgLeft+6, 64
	for _, it := range items {
		fmt.Fprintf(w, `<g transform="translate(%d %d)">%s</g>`+"\n", x, y, it.mark)
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", x+12, y+4, svgAxisColor, esc(it.label))
		x += 40 + 7*len(it.label)
	}
	fmt.Fprintln(w, "</g>")
}

func esc(s string) string { return html.EscapeString(s) }
