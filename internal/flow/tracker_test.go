package flow

import (
	"net/netip"
	"testing"

	"github.com/unplug-dev/unplug/internal/packet"
)

var (
	app  = netip.MustParseAddr("198.18.0.1")
	peer = netip.MustParseAddr("198.18.0.2")
)

const (
	syn = packet.FlagSYN
	ack = packet.FlagACK
	psh = packet.FlagPSH
	fin = packet.FlagFIN
	rst = packet.FlagRST
)

func c2p(flags uint8, seq, ackn uint32, win uint16, n int) Segment {
	return Segment{Dir: packet.In, Src: app, Dst: peer, SrcPort: 40000, DstPort: 80, Flags: flags, Seq: seq, Ack: ackn, Window: win, Len: n}
}

func p2c(flags uint8, seq, ackn uint32, win uint16, n int) Segment {
	return Segment{Dir: packet.Out, Src: peer, Dst: app, SrcPort: 80, DstPort: 40000, Flags: flags, Seq: seq, Ack: ackn, Window: win, Len: n}
}

// TestTrackInfo follows one connection and checks what Track reports beyond
// the kind (the kinds are covered by the capture package's tests).
func TestTrackInfo(t *testing.T) {
	type want struct {
		kind                      Kind
		opened, hsAck, winUpd, es bool
		born                      int64
		rel                       uint32
		bytesIn, bytesOut         uint64
		newBytes                  int
		rtxIn                     uint32
	}
	steps := []struct {
		s    Segment
		want want
	}{
		{c2p(syn, 1000, 0, 500, 0), want{kind: KindNew, opened: true, born: 7}},
		{c2p(syn, 1000, 0, 500, 0), want{kind: KindRetransmit, born: 7, rtxIn: 1}},
		{p2c(syn|ack, 5000, 1001, 900, 0), want{kind: KindNew, born: 7, rtxIn: 1}},
		{c2p(ack, 1001, 5001, 500, 0), want{kind: KindNew, hsAck: true, born: 7, rel: 1, rtxIn: 1}},
		{c2p(ack, 1001, 5001, 500, 0), want{kind: KindNew, hsAck: true, es: true, born: 7, rel: 1, rtxIn: 1}},
		{c2p(ack|psh, 1001, 5001, 500, 100), want{kind: KindNew, es: true, born: 7, rel: 1, bytesIn: 100, newBytes: 100, rtxIn: 1}},
		{c2p(ack|psh, 1051, 5001, 500, 100), want{kind: KindRetransmit, es: true, born: 7, rel: 51, bytesIn: 150, newBytes: 50, rtxIn: 2}},
		{p2c(ack, 5001, 1151, 900, 0), want{kind: KindNew, es: true, born: 7, rel: 1, bytesIn: 150, rtxIn: 2}},
		{p2c(ack, 5001, 1151, 1200, 0), want{kind: KindNew, winUpd: true, es: true, born: 7, rel: 1, bytesIn: 150, rtxIn: 2}},
		{p2c(ack, 5001, 1151, 0, 0), want{kind: KindNew, es: true, born: 7, rel: 1, bytesIn: 150, rtxIn: 2}}, // zero window: no update
		{p2c(ack|psh, 5001, 1151, 0, 20), want{kind: KindNew, es: true, born: 7, rel: 1, bytesIn: 150, bytesOut: 20, newBytes: 20, rtxIn: 2}},
		{c2p(fin|ack, 1151, 5021, 500, 0), want{kind: KindNew, es: true, born: 7, rel: 151, bytesIn: 150, bytesOut: 20, rtxIn: 2}},
		{c2p(rst, 1152, 0, 0, 0), want{kind: KindNew, es: true, born: 7, rel: 152, bytesIn: 150, bytesOut: 20, rtxIn: 2}},
		// A new connection on the same 4-tuple starts from scratch.
		{c2p(syn, 9000, 0, 500, 0), want{kind: KindNew, opened: true, born: 7}},
	}
	tr := NewTracker(0)
	for i, st := range steps {
		got := tr.Track(&st.s, 7)
		w := st.want
		if got.Kind != w.kind || got.Opened != w.opened || got.HandshakeAck != w.hsAck || got.WindowUpdate != w.winUpd ||
			got.Established != w.es || got.Born != w.born || got.RelSeq != w.rel || got.Bytes != [2]uint64{w.bytesIn, w.bytesOut} ||
			got.NewBytes != w.newBytes || got.Retrans[0] != w.rtxIn {
			t.Errorf("step %d: got %+v\nwant %+v", i, got, w)
		}
	}
}

func TestTrackMidStream(t *testing.T) {
	tr := NewTracker(0)
	steps := []struct {
		s    Segment
		kind Kind
		rel  uint32
	}{
		{c2p(ack, 5000, 77, 500, 0), KindNew, 1},            // idle keepalive's first probe: unknown
		{p2c(ack, 77, 5001, 500, 0), KindNew, 1},            // its answer acknowledges 5001
		{c2p(ack, 5000, 77, 500, 0), KindKeepaliveProbe, 1}, // one below what the peer acknowledged
		{c2p(ack|psh, 5001, 77, 500, 10), KindNew, 2},
	}
	for i, st := range steps {
		got := tr.Track(&st.s, 3)
		if got.Kind != st.kind || got.RelSeq != st.rel || got.Born != 0 || !got.Established {
			t.Errorf("step %d: %+v, want kind %v rel %d, born 0, established", i, got, st.kind, st.rel)
		}
	}
}

func TestTableBounded(t *testing.T) {
	ft := NewTable[int, int](4) // two generations of two
	for i := range 10 {
		ft.Put(i, i*10)
		if ft.Len() > ft.Limit() {
			t.Fatalf("after %d puts: %d entries, limit %d", i+1, ft.Len(), ft.Limit())
		}
	}
	if _, ok := ft.Get(7); !ok {
		t.Fatal("Get(7) missed")
	}
	ft.Put(10, 100)
	ft.Put(11, 110)
	if _, ok := ft.Peek(7); !ok {
		t.Error("refreshed entry 7 was evicted")
	}
	if _, ok := ft.Peek(8); ok {
		t.Error("stale entry 8 survived")
	}
}

func TestTrackDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	tr := NewTracker(0)
	segs := []Segment{c2p(syn, 1, 0, 500, 0), p2c(syn|ack, 9, 2, 500, 0), c2p(ack|psh, 2, 10, 500, 100), p2c(ack, 10, 102, 500, 0)}
	for i := range segs {
		tr.Track(&segs[i], 1)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range segs {
			tr.Track(&segs[i], 1)
		}
	})
	if allocs != 0 {
		t.Errorf("Track allocates %.1f times per %d segments", allocs, len(segs))
	}
}

// TestTableGenerations: recently used entries survive a rotation, idle
// ones are forgotten, and the table never exceeds its limit.
func TestFlowTable(t *testing.T) {
	ft := NewTable[int, int](4) // two generations of two
	for i := range 10 {
		ft.Put(i, i*10)
		if ft.Len() > 4 {
			t.Fatalf("after %d puts: %d entries, limit 4", i+1, ft.Len())
		}
	}
	for i := range 10 {
		v, ok := ft.Peek(i)
		if wantOK := i >= 6; ok != wantOK || (ok && v != i*10) {
			t.Errorf("peek(%d) = %d, %v; want present=%v", i, v, ok, wantOK)
		}
	}
	// Refreshing 7 (in the old generation) keeps it across the next rotation.
	if _, ok := ft.Get(7); !ok {
		t.Fatal("get(7) missed")
	}
	ft.Put(10, 100)
	ft.Put(11, 110)
	if _, ok := ft.Peek(7); !ok {
		t.Error("refreshed entry 7 was evicted")
	}
	if _, ok := ft.Peek(8); ok {
		t.Error("stale entry 8 survived")
	}
	ft.Put(7, 71) // update in place: no duplicate
	if v, _ := ft.Get(7); v != 71 || ft.Len() > 4 {
		t.Errorf("update: got %d with %d entries", v, ft.Len())
	}
}

// TestRelAckAndPeek: RelAck counts from the other direction's ISN, and
// Peek answers like Track without recording the segment.
func TestRelAckAndPeek(t *testing.T) {
	tr := NewTracker(0)
	s := c2p(syn, 1000, 0, 64240, 0)
	tr.Track(&s, 0)
	s = p2c(syn|ack, 5000, 1001, 65535, 0)
	if info := tr.Track(&s, 0); info.RelSeq != 0 || info.RelAck != 1 {
		t.Fatalf("SYN-ACK: RelSeq %d RelAck %d, want 0 and 1", info.RelSeq, info.RelAck)
	}
	s = c2p(psh|ack, 1001, 5001, 502, 100)
	peeked := tr.Peek(&s)
	if peeked.RelSeq != 1 || peeked.RelAck != 1 || peeked.Kind != KindNew {
		t.Fatalf("Peek: %+v, want RelSeq 1, RelAck 1, KindNew", peeked)
	}
	// Peek did not record the data: the same segment is new to Track, and
	// only then a retransmission.
	if k := tr.Track(&s, 0).Kind; k != KindNew {
		t.Fatalf("Track after Peek = %v, want new", k)
	}
	if k := tr.Track(&s, 0).Kind; k != KindRetransmit {
		t.Fatalf("second Track = %v, want retransmit", k)
	}
	unknown := Segment{Dir: packet.In, Src: app, Dst: peer, SrcPort: 1, DstPort: 2, Flags: ack, Seq: 7}
	if info := tr.Peek(&unknown); info.RelSeq != 0 || info.Key != KeyOf(&unknown) {
		t.Fatalf("Peek of an unknown connection = %+v", info)
	}
}
