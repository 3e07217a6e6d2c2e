package capture

import (
	"fmt"
	"testing"

	"github.com/unplug-dev/unplug/internal/flow"
	"github.com/unplug-dev/unplug/internal/packet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

const (
	syn = header.TCPFlagSyn
	ack = header.TCPFlagAck
	psh = header.TCPFlagPsh
	fin = header.TCPFlagFin
	rst = header.TCPFlagRst
)

// step is one segment shown to a tracker and the kind it must get.
type step struct {
	dir  packet.Direction
	s    seg
	want flow.Kind
}

// client and server build segments of one IPv4 connection.
func client(seq, ackn uint32, flags header.TCPFlags, n int) seg {
	return seg{src: app4, dst: peer4, sport: 40000, dport: 80, seq: seq, ack: ackn, flags: flags, win: 502, payload: n}
}

func server(seq, ackn uint32, flags header.TCPFlags, n int, win uint16) seg {
	return seg{src: peer4, dst: app4, sport: 80, dport: 40000, seq: seq, ack: ackn, flags: flags, win: win, payload: n}
}

func in(s seg, want flow.Kind) step  { return step{packet.In, s, want} }
func out(s seg, want flow.Kind) step { return step{packet.Out, s, want} }

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "connection lifetime",
			steps: []step{
				in(client(1000, 0, syn, 0), flow.KindNew),
				in(client(1000, 0, syn, 0), flow.KindRetransmit),
				out(server(5000, 1001, syn|ack, 0, 65535), flow.KindNew),
				out(server(5000, 1001, syn|ack, 0, 65535), flow.KindRetransmit),
				in(client(1001, 5001, ack, 0), flow.KindNew),
				in(client(1001, 5001, ack, 0), flow.KindNew),
				in(client(1001, 5001, psh|ack, 100), flow.KindNew),
				in(client(1101, 5001, psh|ack, 100), flow.KindNew),
				in(client(1001, 5001, psh|ack, 100), flow.KindRetransmit),
				in(client(1051, 5001, ack, 200), flow.KindRetransmit),
				in(client(1251, 5001, ack, 0), flow.KindNew),
				out(server(5001, 1251, ack, 0, 65535), flow.KindNew),
				in(client(1250, 5001, ack, 0), flow.KindKeepaliveProbe),
				in(client(1250, 5001, ack, 1), flow.KindKeepaliveProbe),
				in(client(1250, 5001, psh|ack, 1), flow.KindRetransmit),
				in(client(1249, 5001, ack, 0), flow.KindNew),
				in(client(1251, 5001, fin|ack, 0), flow.KindNew),
				in(client(1251, 5001, fin|ack, 0), flow.KindRetransmit),
				in(client(1252, 5002, ack, 0), flow.KindNew),
				out(server(5001, 1252, fin|ack, 0, 65535), flow.KindNew),
				in(client(1252, 5002, rst, 0), flow.KindNew),
				in(client(1252, 5002, rst, 0), flow.KindNew),
				out(server(5001, 1252, fin|ack, 10, 65535), flow.KindRetransmit),
			},
		},
		{
			name: "sequence wraparound",
			steps: []step{
				in(client(0xffffff00, 0, syn, 0), flow.KindNew),
				in(client(0xffffff01, 1, ack, 0x200), flow.KindNew),
				in(client(0x101, 1, ack, 100), flow.KindNew),
				in(client(0xfffffff0, 1, ack, 16), flow.KindRetransmit),
				in(client(0x50, 1, ack, 10), flow.KindRetransmit),
				in(client(0x164, 1, ack, 0), flow.KindKeepaliveProbe),
				in(client(0x165, 1, ack, 1), flow.KindNew),
			},
		},
		{
			name: "zero-window probe",
			steps: []step{
				in(client(1, 1, ack, 100), flow.KindNew),
				out(server(1, 101, ack, 0, 0), flow.KindNew),
				in(client(100, 1, ack, 1), flow.KindZeroWindowProbe),
				in(client(100, 1, ack, 0), flow.KindZeroWindowProbe),
				out(server(1, 101, ack, 0, 4096), flow.KindNew),
				in(client(100, 1, ack, 0), flow.KindKeepaliveProbe),
				in(client(101, 1, ack, 100), flow.KindNew),
			},
		},
		{
			name: "flow first seen mid-stream",
			steps: []step{
				out(server(777, 1, psh|ack, 50, 100), flow.KindNew),
				out(server(827, 1, psh|ack, 50, 100), flow.KindNew),
				out(server(777, 1, psh|ack, 50, 100), flow.KindRetransmit),
				out(server(900, 1, ack, 0, 100), flow.KindNew),
				out(server(877, 1, ack, 10, 100), flow.KindRetransmit),
			},
		},
		{
			name: "new connection on the same 4-tuple",
			steps: []step{
				in(client(1000, 0, syn, 0), flow.KindNew),
				in(client(1001, 1, ack, 100), flow.KindNew),
				in(client(9000, 0, syn, 0), flow.KindNew),
				in(client(9001, 1, ack, 100), flow.KindNew),
				in(client(1001, 1, ack, 100), flow.KindRetransmit),
			},
		},
		{
			name: "flows are separate",
			steps: []step{
				in(client(1, 1, ack, 100), flow.KindNew),
				out(server(1, 1, ack, 100, 100), flow.KindNew),
				in(seg{src: app6, dst: peer6, sport: 40000, dport: 80, seq: 1, flags: ack, payload: 100}, flow.KindNew),
				in(seg{src: app4, dst: peer4, sport: 40001, dport: 80, seq: 1, flags: ack, payload: 100}, flow.KindNew),
				in(seg{src: app4, dst: peer4, sport: 40000, dport: 81, seq: 1, flags: ack, payload: 100}, flow.KindNew),
				// Same 4-tuple seen in the other direction is another flow.
				out(client(1, 1, ack, 100), flow.KindNew),
				in(client(1, 1, ack, 100), flow.KindRetransmit),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			classify, check := NewRetransmitTracker(), NewRetransmitTracker()
			for i, st := range tt.steps {
				p := parsed(t, st.dir, st.s.build())
				if got := classify.Classify(p); got != st.want {
					t.Errorf("step %d (%s seq %d len %d): %v, want %v", i, st.dir, st.s.seq, st.s.payload, got, st.want)
				}
				if got := check.Check(p); got != (st.want == flow.KindRetransmit) {
					t.Errorf("step %d: Check = %v, want %v", i, got, st.want == flow.KindRetransmit)
				}
			}
		})
	}
}

func TestClassifyOther(t *testing.T) {
	frag := seg{src: app4, dst: peer4, sport: 1, dport: 2, flags: ack, payload: 40}.build()
	frag[7] = 8 // fragment offset 64 bytes: no TCP header
	tr := NewRetransmitTracker()
	tests := []struct {
		name string
		p    *packet.Packet
	}{
		{"nil", nil},
		{"udp", parsed(t, packet.In, udpPacket(app4, peer4, 5353, 53, 10))},
		{"icmp", parsed(t, packet.Out, icmpEcho4(peer4, app4, 8))},
		{"unparseable", parsed(t, packet.In, []byte{0x45, 0})},
		{"fragment", parsed(t, packet.In, frag)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 {
				if got := tr.Classify(tt.p); got != flow.KindOther {
					t.Fatalf("Classify = %v, want %v", got, flow.KindOther)
				}
			}
		})
	}
	if n := tr.flows.Len(); n != 0 {
		t.Errorf("tracker holds %d flows after non-TCP packets, want 0", n)
	}
}

func TestKindString(t *testing.T) {
	want := map[flow.Kind]string{flow.KindOther: "other", flow.KindNew: "new", flow.KindRetransmit: "retransmit",
		flow.KindKeepaliveProbe: "keepalive-probe", flow.KindZeroWindowProbe: "zero-window-probe", flow.Kind(99): "other"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), s)
		}
	}
}

// TestTrackerBounded checks that the flow table stays within its limit,
// forgets idle flows, and keeps a flow that stays active.
func TestTrackerBounded(t *testing.T) {
	const limit = 8
	other := func(i int) *packet.Packet {
		return parsed(t, packet.In, seg{src: app4, dst: peer4, sport: uint16(1000 + i), dport: 80, seq: 1, flags: ack, payload: 10}.build())
	}
	active := parsed(t, packet.In, client(1, 1, ack, 10).build())
	idle := parsed(t, packet.In, client(1, 1, ack, 10).build())
	idle.SrcPort = 50000

	tr := newRetransmitTracker(limit)
	tr.Classify(active)
	tr.Classify(idle)
	for i := range 100 {
		tr.Classify(other(i))
		if i%2 == 0 {
			// Touch the active flow with a new segment.
			p := parsed(t, packet.In, client(uint32(11+i*10), 1, ack, 10).build())
			tr.Classify(p)
			active = p
		}
		if n := tr.flows.Len(); n > limit {
			t.Fatalf("tracker holds %d flows, limit %d", n, limit)
		}
	}
	if got := tr.Classify(active); got != flow.KindRetransmit {
		t.Errorf("active flow forgotten: repeat classified %v", got)
	}
	if got := tr.Classify(idle); got != flow.KindNew {
		t.Errorf("idle flow kept beyond the limit: repeat classified %v", got)
	}
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	tr := NewRetransmitTracker()
	var pkts []*packet.Packet
	for i := range 8 {
		s := client(uint32(1+i*100), 1, ack, 100)
		s.sport = uint16(40000 + i%4)
		pkts = append(pkts, parsed(t, packet.In, s.build()))
	}
	for _, p := range pkts { // warm up: create the flows
		tr.Classify(p)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, p := range pkts {
			tr.Classify(p)
		}
	})
	if allocs != 0 {
		t.Errorf("Classify allocates %.1f times per %d packets, want 0", allocs, len(pkts))
	}
}

func ExampleRetransmitTracker() {
	tr := NewRetransmitTracker()
	for _, seq := range []uint32{1, 101, 1, 201} {
		p := &packet.Packet{Dir: packet.In, Version: 4, Proto: packet.ProtoTCP, SrcPort: 40000, DstPort: 80,
			Seq: seq, Flags: packet.FlagACK | packet.FlagPSH, PayloadLen: 100}
		fmt.Println(seq, tr.Classify(p))
	}
	// Output:
	// 1 new
	// 101 new
	// 1 retransmit
	// 201 new
}
