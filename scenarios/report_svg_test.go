package scenarios

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgNode is an element of a rendered graph, for layout checks.
type svgNode struct {
	name, class, text string
	attrs             map[string]string
}

func svgNodes(t *testing.T, b []byte) []svgNode {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var out []svgNode
	var open []int
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			n := svgNode{name: tk.Name.Local, attrs: map[string]string{}}
			for _, a := range tk.Attr {
				n.attrs[a.Name.Local] = a.Value
			}
			n.class = n.attrs["class"]
			out = append(out, n)
			open = append(open, len(out)-1)
		case xml.CharData:
			if len(open) > 0 {
				out[open[len(open)-1]].text += string(tk)
			}
		case xml.EndElement:
			open = open[:len(open)-1]
		}
	}
}

func attrFloat(t *testing.T, n svgNode, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(n.attrs[name], 64)
	if err != nil {
		t.Fatalf("%s %s=%q: %v", n.name, name, n.attrs[name], err)
	}
	return v
}

// timeoutReport is a virtual gVisor timeout (docs/facts.md): transmissions
// at 0, 1, 2, 4 … 64, 128, 248 … 968 s, ETIMEDOUT at 1088 s, all dropped.
func timeoutReport() *Report {
	r := &Report{Scenario: "timeout", Clock: ClockVirtual, Client: "gvisor", Duration: 1088 * time.Second,
		Outcome: "ETIMEDOUT", OutcomeAt: 1088 * time.Second, Packets: PacketCounts{RetransmitsIn: 15},
		Faults: []FaultWindow{{ID: 1, Spec: "drop", End: 1088 * time.Second, Open: true, Outage: true}}}
	add := func(t time.Duration, p Packet) {
		p.Proto = "tcp"
		r.Timeline = append(r.Timeline, Event{T: t, Kind: EventPacket, Packet: &p})
	}
	add(0, Packet{Dir: "in", Conn: 1, Flags: "S", Verdict: "pass", Kind: "new"})
	add(0, Packet{Dir: "out", Conn: 1, Flags: "S.", Ack: 1, Verdict: "pass", Kind: "new"})
	add(0, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Verdict: "drop", Kind: "new"})
	at, rto := time.Second, time.Second // the tail-loss probe, then RTO 1 s doubling to 120 s
	add(at, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Verdict: "drop", Kind: "retransmit", Interval: rto})
	for range 14 {
		at += rto
		add(at, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Verdict: "drop", Kind: "retransmit", Interval: rto})
		rto = min(2*rto, 120*time.Second)
	}
	return r
}

// TestSVGLayout renders graphs and checks what the eye needs: the last
// marks away from the right and top edges, intervals next to
// retransmissions, dropped probes still drawn as probes, one colour and a
// key per connection, and a log time axis where a linear one would crowd
// the early events.
func TestSVGLayout(t *testing.T) {
	render := func(r *Report, opts SVGOptions) []svgNode {
		t.Helper()
		var b bytes.Buffer
		if err := r.WriteSVGOptions(&b, opts); err != nil {
			t.Fatal(err)
		}
		return svgNodes(t, b.Bytes())
	}
	byClass := func(ns []svgNode, class string) []svgNode {
		var out []svgNode
		for _, n := range ns {
			if strings.Contains(" "+n.class+" ", " "+class+" ") {
				out = append(out, n)
			}
		}
		return out
	}
	xlabel := func(ns []svgNode) string { return byClass(ns, "xlabel")[0].text }

	t.Run("margins and intervals", func(t *testing.T) {
		ns := render(sampleReport(), SVGOptions{})
		if strings.Contains(xlabel(ns), "log") {
			t.Errorf("sample report got a log axis: %q", xlabel(ns))
		}
		right := float64(svgLeft + svgPlotW)
		for _, n := range byClass(ns, "extent") {
			if x := attrFloat(t, n, "x1"); x > right-0.04*svgPlotW {
				t.Errorf("segment at x=%.1f, within 4%% of the right edge %.0f", x, right)
			}
			if y := math.Min(attrFloat(t, n, "y1"), attrFloat(t, n, "y2")); y < svgTop+0.08*svgPlotH {
				t.Errorf("segment top at y=%.1f, within 8%% of the top edge %d", y, svgTop)
			}
		}
		var labels []string
		for _, n := range byClass(ns, "interval") {
			labels = append(labels, n.text)
		}
		// The probe 10 ms after the last retransmission has no room for
		// its label (its tooltip says it).
		if got := strings.Join(labels, " "); got != "+200ms +200ms +1.24s" {
			t.Errorf("interval labels %q, want +200ms +200ms +1.24s", got)
		}
	})

	t.Run("dropped probe", func(t *testing.T) {
		r := sampleReport()
		for i := range r.Timeline {
			if p := r.Timeline[i].Packet; p != nil && p.Kind == "keepalive-probe" {
				p.Verdict = "drop"
			}
		}
		ns := render(r, SVGOptions{})
		drops := byClass(ns, "drop")
		var probe bool
		for i, n := range ns {
			if n.class == "drop probe" {
				probe = i+2 < len(ns) && ns[i+2].name == "path" && ns[i+2].attrs["fill"] == "white" && ns[i+2].attrs["stroke"] == svgProbeColor
			}
		}
		if !probe || len(drops) != 4 {
			t.Errorf("a dropped probe is not drawn as a hollow probe under its cross (%d drops)", len(drops))
		}
	})

	t.Run("log time", func(t *testing.T) {
		r := timeoutReport()
		auto := render(r, SVGOptions{})
		if !strings.Contains(xlabel(auto), "log scale") {
			t.Fatalf("1088 s of doubling RTOs drawn on %q, want the log axis", xlabel(auto))
		}
		// On a log axis 1, 2, 4 … 64 s are evenly spaced.
		var xs []float64
		for _, n := range byClass(auto, "extent")[1:8] {
			xs = append(xs, attrFloat(t, n, "x1"))
		}
		for i := 2; i < len(xs); i++ {
			if d0, d1 := xs[i-1]-xs[i-2], xs[i]-xs[i-1]; d1 < 0.8*d0 || d1 > 1.25*d0 || d0 < 30 {
				t.Errorf("log axis: gaps %.1f then %.1f px between doublings", d0, d1)
			}
		}
		lin := render(r, SVGOptions{Time: SVGTimeLinear})
		if strings.Contains(xlabel(lin), "log") {
			t.Errorf("--svg-time linear drew %q", xlabel(lin))
		}
		if x := attrFloat(t, byClass(lin, "extent")[7], "x1"); x > svgLeft+0.06*svgPlotW {
			t.Errorf("linear: the 64 s retransmission at x=%.1f, expected crowded at the left", x)
		}
		var b bytes.Buffer
		if err := r.WriteSVGOptions(&b, SVGOptions{Time: "sideways"}); err == nil {
			t.Error("an unknown time axis was accepted")
		}
	})

	t.Run("connections", func(t *testing.T) {
		r := &Report{Scenario: "loss", Duration: 3 * time.Second, Packets: PacketCounts{RetransmitsOut: 3, PayloadOut: 3000},
			Faults: []FaultWindow{{ID: 1, Spec: "loss 5%", End: 3 * time.Second, Open: true}}}
		for c := 1; c <= 3; c++ {
			t0 := time.Duration(c) * 500 * time.Millisecond
			for i, p := range []Packet{
				{Dir: "out", Flags: "P.", Seq: 1, Len: 1000, Kind: "new"},
				{Dir: "in", Flags: ".", Ack: 1001, Kind: "new"},
				{Dir: "out", Flags: "P.", Seq: 1, Len: 1000, Kind: "retransmit", Interval: 200 * time.Millisecond},
			} {
				p.Proto, p.Conn, p.Verdict = "tcp", c, "pass"
				r.Timeline = append(r.Timeline, Event{T: t0 + time.Duration(i)*100*time.Millisecond, Kind: EventPacket, Packet: &p})
			}
		}
		ns := render(r, SVGOptions{})
		strokes := map[string]bool{}
		for _, n := range byClass(ns, "ack") {
			strokes[n.attrs["stroke"]] = true
		}
		if len(strokes) != 3 || len(byClass(ns, "conn-key")) != 3 {
			t.Errorf("3 connections: %d ack colours, %d keys; want 3 and 3", len(strokes), len(byClass(ns, "conn-key")))
		}
		var legend []string
		for _, n := range ns {
			if n.name == "text" && n.text != "" {
				legend = append(legend, n.text)
			}
		}
		if all := strings.Join(legend, "|"); !regexp.MustCompile(`other rule in force`).MatchString(all) {
			t.Errorf("the loss rule's shading is not in the legend: %s", all)
		}
	})
}
