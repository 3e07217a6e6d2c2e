package fault

import (
	"bytes"
	"slices"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/internal/packet"
)

// upper records what the fault layer delivers towards the peer.
type upper struct {
	mu  sync.Mutex
	got [][]byte
}

func (u *upper) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	u.mu.Lock()
	u.got = append(u.got, flatten(pkt, nil))
	u.mu.Unlock()
}

func (u *upper) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (u *upper) packets() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

// events records the observer's view.
type events struct {
	mu  sync.Mutex
	evs []Event
}

func (o *events) Observe(ev *Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := *ev
	p := *ev.Packet
	e.Packet, e.Data = &p, slices.Clone(ev.Data)
	o.evs = append(o.evs, e)
}

func (o *events) verdicts() []Verdict {
	o.mu.Lock()
	defer o.mu.Unlock()
	var v []Verdict
	for _, e := range o.evs {
		v = append(v, e.Decision.Verdict)
	}
	return v
}

// layer is a fault endpoint over a channel endpoint standing for the device.
type layer struct {
	ep    *Endpoint
	dev   *channel.Endpoint
	up    *upper
	obs   *events
	clock *testClock
}

func newLayer(t *testing.T, specs ...string) *layer {
	t.Helper()
	return newLayerObserved(t, true, specs...)
}

// newLayerObserved is newLayer with or without an observer (l.obs nil).
func newLayerObserved(t testing.TB, observed bool, specs ...string) *layer {
	t.Helper()
	l := &layer{dev: channel.New(64, 1500, ""), up: &upper{}, clock: &testClock{}}
	ctl := NewController(l.clock, 1)
	for _, s := range specs {
		if _, err := ctl.AddString(s); err != nil {
			t.Fatal(err)
		}
	}
	if observed {
		l.obs = &events{}
		l.ep = NewEndpoint(l.dev, ctl, l.obs)
	} else {
		l.ep = NewEndpoint(l.dev, ctl, nil)
	}
	l.ep.Attach(l.up)
	t.Cleanup(func() {
		l.ep.Close()
		for l.dev.Read() != nil {
		}
	})
	return l
}

// inject sends b from the device towards the peer.
func (l *layer) inject(b []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(slices.Clone(b))})
	l.dev.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// write sends packets from the peer towards the device.
func (l *layer) write(bs ...[]byte) {
	var list stack.PacketBufferList
	for _, b := range bs {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(slices.Clone(b))})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		list.PushBack(pkt)
	}
	l.ep.WritePackets(list)
	list.DecRef()
}

// written returns what reached the device so far.
func (l *layer) written() [][]byte {
	var out [][]byte
	for {
		pkt := l.dev.Read()
		if pkt == nil {
			return out
		}
		out = append(out, flatten(pkt, nil))
		pkt.DecRef()
	}
}

func TestEndpointInbound(t *testing.T) {
	data := in(packet.FlagACK|packet.FlagPSH, 1001, 5001, 500, 100)
	tests := []struct {
		spec     string
		up, down int       // packets delivered to the peer, written to the device
		verdicts []Verdict // the observer's events
		check    func(t *testing.T, up, down [][]byte)
	}{
		{"drop", 0, 0, []Verdict{Dropped}, nil},
		{"reject", 0, 1, []Verdict{Dropped, Injected}, func(t *testing.T, _, down [][]byte) {
			r := parsed(t, packet.Out, down[0])
			if r.Flags != packet.FlagRST || r.Seq != 5001 || r.DstPort != 40000 || !checksumsValid(t, down[0]) {
				t.Errorf("RST to the app %+v", r)
			}
		}},
		{"rst-at-seq=50", 1, 0, []Verdict{Dropped, Injected}, func(t *testing.T, up, _ [][]byte) {
			r := parsed(t, packet.In, up[0])
			if r.Flags != packet.FlagRST|packet.FlagACK || r.Seq != 1001 || r.DstPort != 80 || !checksumsValid(t, up[0]) {
				t.Errorf("RST to the peer %+v", r)
			}
		}},
		{"duplicate", 2, 0, []Verdict{Pass, Injected}, func(t *testing.T, up, _ [][]byte) {
			if !bytes.Equal(up[0], data) || !bytes.Equal(up[1], data) {
				t.Error("copies differ from the original")
			}
		}},
		{"corrupt", 1, 0, []Verdict{Dropped}, func(t *testing.T, up, _ [][]byte) {
			if len(up[0]) != len(data) || bytes.Equal(up[0], data) || checksumsValid(t, up[0]) {
				t.Error("the copy is not corrupted")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			l := newLayer(t, tt.spec)
			l.inject(data)
			l.clock.Advance(0) // what the layer queued for the peer
			up, down := l.up.packets(), l.written()
			if len(up) != tt.up || len(down) != tt.down {
				t.Fatalf("%d packets up, %d down; want %d, %d", len(up), len(down), tt.up, tt.down)
			}
			if v := l.obs.verdicts(); !slices.Equal(v, tt.verdicts) {
				t.Errorf("events %v, want %v", v, tt.verdicts)
			}
			if tt.check != nil {
				tt.check(t, up, down)
			}
		})
	}
}

func TestEndpointOutbound(t *testing.T) {
	a := out(packet.FlagACK|packet.FlagPSH, 5001, 1101, 500, 10)
	b := out(packet.FlagACK|packet.FlagPSH, 5011, 1101, 500, 10)
	tests := []struct {
		spec  string
		down  [][]byte
		check func(t *testing.T, down [][]byte)
	}{
		{"duplicate nth=1", [][]byte{a, a, b}, nil},
		{"drop nth=1", [][]byte{b}, nil},
		{"rst-at-seq=11", [][]byte{a, nil}, func(t *testing.T, down [][]byte) {
			if r := parsed(t, packet.Out, down[1]); r.Flags != packet.FlagRST|packet.FlagACK || r.Seq != 5011 {
				t.Errorf("RST %+v", r)
			}
		}},
		{"corrupt nth=2", [][]byte{a, nil}, func(t *testing.T, down [][]byte) {
			if bytes.Equal(down[1], b) || checksumsValid(t, down[1]) {
				t.Error("not corrupted")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			l := newLayer(t, tt.spec)
			l.write(a, b)
			down := l.written()
			if len(down) != len(tt.down) {
				t.Fatalf("%d packets written, want %d", len(down), len(tt.down))
			}
			for i, want := range tt.down {
				if want != nil && !bytes.Equal(down[i], want) {
					t.Errorf("packet %d differs", i)
				}
			}
			if tt.check != nil {
				tt.check(t, down)
			}
		})
	}
}

// TestEndpointRejectOutbound: the RST answering a peer's segment reaches the
// peer through the queue, never from inside WritePackets.
func TestEndpointRejectOutbound(t *testing.T) {
	l := newLayer(t, "reject")
	l.write(out(packet.FlagACK, 5001, 1101, 500, 10))
	if n := len(l.written()); n != 0 {
		t.Fatalf("%d packets reached the device", n)
	}
	if n := len(l.up.packets()); n != 0 {
		t.Fatal("the RST reached the peer from inside WritePackets")
	}
	l.clock.Advance(0)
	if n := len(l.up.packets()); n != 1 {
		t.Fatalf("%d packets reached the peer, want the RST", n)
	}
	r := parsed(t, packet.In, l.up.packets()[0])
	if r.Flags != packet.FlagRST || r.Seq != 1101 || r.SrcPort != 40000 {
		t.Errorf("RST %+v", r)
	}
}

// TestEndpointReorder: a held packet goes out after gap later ones, or
// after MaxReorderHold when nothing follows.
func TestEndpointReorder(t *testing.T) {
	l := newLayer(t, "reorder gap=2 nth=1")
	p := func(i int) []byte { return in(packet.FlagACK|packet.FlagPSH, uint32(1+10*i), 1, 500, 10) }
	for i := range 4 {
		l.inject(p(i))
		l.clock.Advance(0)
	}
	var seqs []uint32
	for _, b := range l.up.packets() {
		seqs = append(seqs, parsed(t, packet.In, b).Seq)
	}
	if want := []uint32{11, 21, 1, 31}; !slices.Equal(seqs, want) {
		t.Fatalf("delivered seqs %v, want %v", seqs, want)
	}
	if st := l.ep.Controller().Status()[0]; st.Reordered != 1 || st.Delayed != 1 {
		t.Errorf("status %+v", st)
	}

	l = newLayer(t, "reorder gap=5 nth=1")
	l.inject(p(0))
	l.inject(p(1))
	if n := len(l.up.packets()); n != 1 || l.ep.Pending() != 1 {
		t.Fatalf("%d delivered, %d pending", n, l.ep.Pending())
	}
	l.clock.Advance(MaxReorderHold)
	if n := len(l.up.packets()); n != 2 || l.ep.Pending() != 0 {
		t.Fatalf("after the hold limit: %d delivered, %d pending", n, l.ep.Pending())
	}
}

// TestEndpointClosedHolds: packets held at Close are released (the refs
// leak check in TestMain would catch them otherwise).
func TestEndpointClosedHolds(t *testing.T) {
	l := newLayer(t, "reorder gap=100 dir=in", "delay 1h dir=out")
	l.inject(in(packet.FlagACK, 1, 1, 500, 10))
	l.write(out(packet.FlagACK, 1, 1, 500, 10))
	if l.ep.Pending() != 2 {
		t.Fatalf("pending %d", l.ep.Pending())
	}
	l.ep.Close()
	if l.ep.Pending() != 0 {
		t.Fatalf("pending %d after close", l.ep.Pending())
	}
}
