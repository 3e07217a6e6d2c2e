package scenarios

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func f64(v float64) *float64 { return &v }

// sampleReport is a hand-made report of a brief outage with every kind of
// event, packet and optional field.
func sampleReport() *Report {
	ms := time.Millisecond
	pkt := func(t time.Duration, p Packet) Event {
		p.Proto = "tcp"
		if p.Verdict == "" {
			p.Verdict = "pass"
		}
		if p.Kind == "" {
			p.Kind = "new"
		}
		return Event{T: t, Kind: EventPacket, Text: packetText(&p), Conn: p.Conn, Packet: &p}
	}
	return &Report{
		Scenario: "brief-outage", Description: "link down during a request", Clock: ClockReal, Client: "kernel", Seed: 7,
		Params:   []ParamValue{{Name: "outage", Value: "1s"}},
		Duration: 1800 * ms, Anchor: 10 * ms, AnchorLabel: "request sent",
		Outcome: OutcomeRecovered, OutcomeAt: 1700 * ms, OutcomeDetail: "the reply arrived",
		Expected: OutcomeRecovered, Errno: "EPIPE", ErrnoAt: 1750 * ms,
		AppErrors: []AppError{{T: 1750 * ms, Op: "send", Conn: 1, Errno: "EPIPE"}},
		Verdict:   VerdictFail,
		Expectations: []Expectation{
			{Name: "outcome", Theory: "recovered", Measured: "recovered", Pass: true},
			{Name: "time to recovered", Theory: "1.645 s", Measured: "1.690 s", Pass: true, Timing: true, Basis: "FACTS",
				Unit: "s", Want: f64(1.645), Min: f64(1.0), Max: f64(2.3), Got: f64(1.69)},
			{Name: "retransmissions", Theory: "4 (3 – 5)", Measured: "7", Pass: false, Unit: "count",
				Want: f64(4), Min: f64(3), Max: f64(5), Got: f64(7)},
		},
		Measurements: []Measurement{{Name: "recovery lag", Value: 0.69, Unit: "s"}},
		Faults:       []FaultWindow{{ID: 1, Spec: "drop for=1s", Start: 10 * ms, End: 1010 * ms, Outage: true}, {ID: 2, Spec: "delay 5ms", Start: 0, End: 1800 * ms, Open: true}},
		Retransmissions: []Retransmission{
			{T: 210 * ms, Dir: "in", Conn: 1, Kind: "retransmit", Flags: "P.", Seq: 1, Len: 21, Verdict: "drop", N: 1, Interval: 200 * ms},
			{T: 410 * ms, Dir: "in", Conn: 1, Kind: "retransmit", Flags: "P.", Seq: 1, Len: 21, Verdict: "drop", N: 2, Interval: 200 * ms, Ratio: 1},
			{T: 1650 * ms, Dir: "in", Conn: 1, Kind: "retransmit", Flags: "P.", Seq: 1, Len: 21, Verdict: "pass", N: 3, Interval: 1240 * ms, Ratio: 6.2},
			{T: 1660 * ms, Dir: "in", Conn: 1, Kind: "keepalive-probe", Flags: ".", Seq: 21, Verdict: "pass", N: 1, Interval: 10 * ms},
		},
		Packets: PacketCounts{Total: 12, In: 8, Out: 4, DroppedIn: 3, RetransmitsIn: 3, ProbesIn: 1, PayloadIn: 21, PayloadOut: 447, Delayed: 1, NotInTimeline: 2},
		Timeline: []Event{
			{T: 0, Kind: EventStart, Text: "scenario starts"},
			{T: 0, Kind: EventConnect, Conn: 1, Text: "connect to port 80"},
			pkt(1*ms, Packet{Dir: "in", Conn: 1, Flags: "S", Win: 64240}),
			pkt(1*ms, Packet{Dir: "out", Conn: 1, Flags: "S.", Ack: 1, Win: 29184}),
			pkt(1*ms, Packet{Dir: "in", Conn: 1, Flags: ".", Seq: 1, Ack: 1, Win: 63}),
			{T: 2 * ms, Kind: EventAccepted, Conn: 1, Text: "connected"},
			{T: 10 * ms, Kind: EventFaultOn, Text: "outage starts"},
			{T: 10 * ms, Kind: EventSend, Conn: 1, Bytes: 42, Count: 2, End: 11 * ms, Text: "send × 2: 42 bytes"},
			pkt(10*ms, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Verdict: "drop", Comment: "dropped by rule 1: drop for=1s"}),
			pkt(210*ms, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Verdict: "drop", Kind: "retransmit", Interval: 200 * ms}),
			pkt(410*ms, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Verdict: "drop", Kind: "retransmit", Interval: 200 * ms, Ratio: 1}),
			{T: 1010 * ms, Kind: EventFaultOff, Text: "rule 1 ends"},
			pkt(1650*ms, Packet{Dir: "in", Conn: 1, Flags: "P.", Seq: 1, Ack: 1, Len: 21, Kind: "retransmit", Interval: 1240 * ms, Ratio: 6.2}),
			pkt(1660*ms, Packet{Dir: "in", Conn: 1, Flags: ".", Seq: 21, Ack: 1, Kind: "keepalive-probe", Interval: 10 * ms}),
			pkt(1690*ms, Packet{Dir: "out", Conn: 1, Flags: "P.", Seq: 1, Ack: 22, Len: 400, Win: 200}),
			pkt(1690*ms, Packet{Dir: "out", Conn: 1, Flags: "P.", Seq: 401, Ack: 22, Len: 47, Win: 200}),
			pkt(1690*ms, Packet{Dir: "out", Conn: 1, Flags: "F.", Seq: 448, Ack: 22, Win: 200}),
			pkt(1695*ms, Packet{Dir: "in", Conn: 1, Flags: ".", Seq: 22, Ack: 449, Win: 63}),
			{T: 1700 * ms, Kind: EventRecv, Conn: 1, Bytes: 447, Took: 1690 * ms, Text: "recv: 447 bytes (blocked 1.69s)"},
			{T: 1700 * ms, Kind: EventOutcome, Text: "recovered: the reply arrived"},
			{T: 1750 * ms, Kind: EventSend, Conn: 1, Errno: "EPIPE", Text: "send: EPIPE"},
			{T: 1800 * ms, Kind: EventEnd, Text: "scenario ends"},
		},
		Wall: Wall{Start: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Duration: 1900 * ms, Speedup: 0.95},
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"scenario   brief-outage — link down during a request",
		"--outage 1s",
		"outcome    recovered at 1.700 s: the reply arrived",
		"errno      EPIPE at 1.750 s",
		"verdict    FAIL",
		"time to recovered *",
		"* timing:",
		"measured: recovery lag 0.690 s",
		"×6.20",           // a ratio in the retransmission table
		"keepalive-probe", // probes are listed with retransmissions
		"3 packets (2 client → peer, 1 peer → client, 0 payload bytes)", // the handshake is folded into one line
		"DROP",                // drops keep their own line
		"rule 1 ends",         // fault off
		"(until 0.011 s)",     // merged calls show their span
		"2 later packets are", // packets beyond the timeline limit
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Expectation rows show theory, measurement and result on one line.
	if !regexp.MustCompile(`retransmissions\s+4 \(3 – 5\)\s+7\s+FAIL`).MatchString(out) {
		t.Errorf("retransmissions row not rendered as expected:\n%s", out)
	}
}

func TestWriteTableElidesLongLists(t *testing.T) {
	r := sampleReport()
	r.Retransmissions = nil
	r.Timeline = nil
	for i := 0; i < 500; i++ {
		d := time.Duration(i) * time.Millisecond
		r.Retransmissions = append(r.Retransmissions, Retransmission{T: d, Dir: "out", Kind: "retransmit", N: 1})
		r.Timeline = append(r.Timeline, Event{T: d, Kind: EventNote, Text: "note"})
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "more lines (the JSON report has every event)") || !strings.Contains(out, "more\t") && !strings.Contains(out, "more ") {
		t.Errorf("long lists not elided:\n%s", out)
	}
	if lines := strings.Count(out, "\n"); lines > tableTimelineLines+tableRetransmits+60 {
		t.Errorf("table has %d lines for 500 events", lines)
	}
}

// schemaField is one documented field.
type schemaField struct {
	typ      string
	required bool
}

// loadSchema parses docs/report-schema.md: a table of fields after each
// "### `path`" heading.
func loadSchema(t *testing.T) map[string]map[string]schemaField {
	t.Helper()
	f, err := os.Open("../docs/report-schema.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	schema := map[string]map[string]schemaField{}
	heading := regexp.MustCompile("^### `([^`]+)`")
	row := regexp.MustCompile("^\\| `([a-z_0-9]+)` \\| ([a-z]+) \\| (yes|optional) \\|")
	var cur map[string]schemaField
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := heading.FindStringSubmatch(sc.Text()); m != nil {
			cur = map[string]schemaField{}
			schema[m[1]] = cur
			continue
		}
		if m := row.FindStringSubmatch(sc.Text()); m != nil && cur != nil {
			cur[m[1]] = schemaField{typ: m[2], required: m[3] == "yes"}
		}
	}
	if len(schema) < 10 {
		t.Fatalf("schema document has %d object tables, want every object of the report", len(schema))
	}
	return schema
}

// checkSchema checks a decoded report against the documented schema.
func checkSchema(t *testing.T, doc map[string]any, schema map[string]map[string]schemaField) {
	t.Helper()
	var walk func(path string, obj map[string]any)
	walk = func(path string, obj map[string]any) {
		fields, ok := schema[path]
		if !ok {
			t.Errorf("object %s is not documented", path)
			return
		}
		for name, f := range fields {
			v, present := obj[name]
			if !present {
				if f.required {
					t.Errorf("%s.%s is required but missing", path, name)
				}
				continue
			}
			if got := jsonType(v); got != f.typ && !(f.typ == "number" && got == "integer") && !(f.typ == "time" && got == "string") {
				t.Errorf("%s.%s is %s, documented as %s", path, name, got, f.typ)
			}
			if f.typ == "time" {
				if _, err := time.Parse(time.RFC3339Nano, v.(string)); err != nil {
					t.Errorf("%s.%s = %v is not an RFC 3339 time", path, name, v)
				}
			}
			switch v := v.(type) {
			case map[string]any:
				walk(path+"."+name, v)
			case []any:
				for _, e := range v {
					if m, ok := e.(map[string]any); ok {
						walk(path+"."+name+"[]", m)
					}
				}
			}
		}
		for name := range obj {
			if _, ok := fields[name]; !ok {
				t.Errorf("%s.%s is in the JSON but not documented", path, name)
			}
		}
	}
	walk("report", doc)
}

func jsonType(v any) string {
	switch v := v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		if strings.ContainsAny(v.String(), ".eE") {
			return "number"
		}
		return "integer"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

func decodeReport(t *testing.T, r *Report) map[string]any {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&b)
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("report JSON does not decode: %v", err)
	}
	return doc
}

func TestJSONSchema(t *testing.T) {
	schema := loadSchema(t)
	full := sampleReport()
	full.Error = "interrupted"
	empty := &Report{Scenario: "timeout"}
	for name, r := range map[string]*Report{"full": full, "empty": empty} {
		t.Run(name, func(t *testing.T) {
			doc := decodeReport(t, r)
			checkSchema(t, doc, schema)
			// Lists are [] rather than null, so scripts can iterate.
			for _, k := range []string{"params", "app_errors", "expectations", "measurements", "faults", "retransmissions", "timeline"} {
				if _, ok := doc[k].([]any); !ok {
					t.Errorf("%s is %T, want an array", k, doc[k])
				}
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	want := sampleReport()
	var b bytes.Buffer
	if err := want.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	var b2 bytes.Buffer
	if err := got.WriteJSON(&b2); err != nil {
		t.Fatal(err)
	}
	if b.String() != b2.String() {
		t.Error("report JSON does not survive a decode/encode round trip")
	}
}

// svgElements parses an SVG and counts elements by class.
func svgElements(t *testing.T, svg []byte) (classes map[string]int, titles int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	classes = map[string]int{}
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if root == "" {
			root = se.Name.Local
			if root != "svg" || se.Name.Space != "http://www.w3.org/2000/svg" {
				t.Fatalf("root element is %s in %q, want svg in the SVG namespace", root, se.Name.Space)
			}
		}
		if se.Name.Local == "title" {
			titles++
		}
		for _, a := range se.Attr {
			if a.Name.Local == "class" {
				for _, c := range strings.Fields(a.Value) {
					classes[c]++
				}
			}
		}
	}
	return classes, titles
}

func TestWriteSVG(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	classes, titles := svgElements(t, b.Bytes())
	// The sample's client sends the SYN, the handshake ACK, the request
	// (dropped), two dropped retransmissions, one that passes, a probe and
	// a final ACK; the peer's ACKs form one line; one outage, one other
	// fault. A dropped mark carries its kind too ("drop sent", "drop
	// retransmit").
	want := map[string]int{
		"sent": 4, "drop": 3, "retransmit": 3, "probe": 1, "ack": 1,
		"outage": 1, "fault": 1, "outcome": 1, "legend": 1, "xlabel": 1, "ylabel": 1,
	}
	for c, n := range want {
		if classes[c] != n {
			t.Errorf("%d elements of class %q, want %d (all: %v)", classes[c], c, n, classes)
		}
	}
	if titles < 10 {
		t.Errorf("%d tooltips, want one per mark", titles)
	}
	if !bytes.Contains(b.Bytes(), []byte("client → peer")) {
		t.Error("the y axis does not say whose sequence numbers it shows")
	}
}

func TestWriteSVGEmptyAndEscaped(t *testing.T) {
	r := &Report{Scenario: `a<b>&"c"`, Outcome: "ETIMEDOUT", OutcomeDetail: "<&>"}
	var b bytes.Buffer
	if err := r.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	classes, _ := svgElements(t, b.Bytes())
	if classes["sent"] != 0 || classes["outcome"] != 1 {
		t.Errorf("empty report drew %v", classes)
	}
}

func TestDataDirection(t *testing.T) {
	tests := []struct {
		name string
		c    PacketCounts
		want string
	}{
		{"client retransmits", PacketCounts{RetransmitsIn: 4, PayloadOut: 447, PayloadIn: 21}, "in"},
		{"peer retransmits", PacketCounts{RetransmitsOut: 5, PayloadOut: 78000}, "out"},
		{"client probes", PacketCounts{ProbesIn: 3}, "in"},
		{"no retransmissions, peer sends more", PacketCounts{PayloadOut: 10, PayloadIn: 5}, "out"},
		{"nothing at all", PacketCounts{}, "in"},
	}
	for _, tt := range tests {
		if got := dataDirection(tt.c); got != tt.want {
			t.Errorf("%s: dataDirection = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestMet(t *testing.T) {
	r := &Report{Outcome: "EPIPE", AppErrors: []AppError{{Errno: "ETIMEDOUT"}, {Errno: "EPIPE"}}}
	tests := []struct {
		expect  string
		met     bool
		wantErr bool
	}{
		{"EPIPE", true, false},
		{"epipe", true, false},
		{"ETIMEDOUT", true, false}, // got on the way
		{"ECONNRESET", false, false},
		{"recovered", false, false},
		{"survived", false, false},
		{"connected", false, false},
		{"EFOOBAR", false, true},
		{"", false, true},
		{"ok", false, true},
	}
	for _, tt := range tests {
		met, err := r.Met(tt.expect)
		if (err != nil) != tt.wantErr || met != tt.met {
			t.Errorf("Met(%q) = %v, %v; want %v, error %v", tt.expect, met, err, tt.met, tt.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "ETIMEDOUT")) {
			t.Errorf("Met(%q) error %q is not one line naming what is accepted", tt.expect, err)
		}
	}
	if met, _ := (&Report{Outcome: OutcomeSurvived}).Met("survived"); !met {
		t.Error("survived not met by a survived outcome")
	}
}
