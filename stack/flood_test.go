package stack

import (
	"context"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// heapSlack is how much the live heap may grow between the second and the
// last round of a flood. Keeping even 100 bytes of every flood packet
// would exceed it several times over.
const heapSlack = 8 << 20

// TestInboundFlood writes packets into the peer's device far faster than
// the peer consumes them, several rounds in a row, and checks that the
// inbound path is bounded: the device queue refuses and counts the excess
// (tun.MemoryDevice.Dropped), the fault layer's delay queue stops at
// fault.MaxDelayed and counts the rest as QueueDrops, every packet is
// accounted for, and the live heap stays flat from round to round. The
// peer's replies, which the test never reads, overflow the other
// direction's queue the same way.
func TestInboundFlood(t *testing.T) {
	const (
		rounds   = 4
		perRound = 100_000
		// burst packets are written back to back, then the test waits
		// until the peer has taken or the device dropped all of them: a
		// burst is twice the device queue, so every burst overflows it,
		// and the peer still takes about 1 000 packets per burst.
		burst = 2 * tun.MemoryQueueLen
	)
	for _, tc := range []struct {
		name   string
		rules  []string
		packet func(i int) []byte
		check  func(t *testing.T, peer *Peer, sent uint64)
	}{
		{name: "udp to a closed port", packet: func(i int) []byte { return udp4(uint16(1024+i%60000), 9999, []byte("flood")) }},
		{name: "syn to a listener", packet: func(i int) []byte { return tcp4(uint16(1024+i%60000), 7, uint32(i), header.TCPFlagSyn, nil) }},
		{name: "segments of no connection", packet: func(i int) []byte {
			return tcp4(uint16(1024+i%60000), 7, uint32(i), header.TCPFlagAck|header.TCPFlagPsh, []byte("no such connection"))
		}},
		{name: "malformed", packet: func(i int) []byte {
			p := udp4(1024, 9, nil)
			p[0] = 0x4f // header length 60 > packet
			return p
		}},
		{
			name:   "delay queue full",
			rules:  []string{"delay 1h dir=in"},
			packet: func(i int) []byte { return udp4(uint16(1024+i%60000), 9999, []byte("held")) },
			check: func(t *testing.T, peer *Peer, _ uint64) {
				st := peer.Fault.Stats()
				if p := peer.Fault.Pending(); p != fault.MaxDelayed {
					t.Errorf("%d packets held, want the bound %d", p, fault.MaxDelayed)
				}
				if in, qd := st.In.Load(), st.QueueDrops.Load(); qd != in-fault.MaxDelayed {
					t.Errorf("queue drops %d, want every packet beyond the bound (%d of %d)", qd, in-fault.MaxDelayed, in)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tun.NewMemoryPair(1500)
			defer b.Close()
			specs := parseSpecs(t, tc.rules...)
			peer, err := New(context.Background(), Options{Device: a, Faults: specs, Services: services.Config{Echo: 7}})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			pkts := make([][]byte, 1024) // built once: the test must not be the allocator
			for i := range pkts {
				pkts[i] = tc.packet(i)
			}

			var heap [rounds]uint64
			var sent uint64
			for r := range rounds {
				for i := range perRound {
					if _, err := b.Write(pkts[i%len(pkts)]); err != nil {
						t.Fatal(err)
					}
					if sent++; sent%burst == 0 {
						awaitAccounted(t, peer, b, sent)
					}
				}
				awaitAccounted(t, peer, b, sent)
				heap[r] = liveHeap()
			}
			st := peer.Status().Link
			t.Logf("sent %d: peer took %d, device dropped %d, replies dropped %d, unparseable %d, queue drops %d; live heap %v MiB",
				sent, st.In, b.Dropped(), a.Dropped(), st.Unparseable, st.QueueDrops, mib(heap[:]))
			if b.Dropped() == 0 {
				t.Error("the device queue never overflowed: the flood did not outrun the peer")
			}
			if st.In == 0 {
				t.Error("the peer took no packet")
			}
			if grew := int64(heap[rounds-1]) - int64(heap[1]); grew > heapSlack {
				t.Errorf("live heap grew %d KiB from round 2 to %d: %v MiB", grew>>10, rounds, mib(heap[:]))
			}
			if tc.check != nil {
				tc.check(t, peer, sent)
			}
		})
	}
}

// awaitAccounted waits until every packet written to b is either taken by
// the peer (counted at its fault layer) or dropped by the device queue.
func awaitAccounted(t *testing.T, peer *Peer, b *tun.MemoryDevice, sent uint64) {
	t.Helper()
	deadline := time.Now().Add(safetyTimeout)
	for peer.Fault.Stats().In.Load()+b.Dropped() != sent {
		if time.Now().After(deadline) {
			t.Fatalf("of %d packets the peer took %d and the device dropped %d; the rest vanished",
				sent, peer.Fault.Stats().In.Load(), b.Dropped())
		}
		time.Sleep(time.Millisecond)
	}
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mib(b []uint64) []float64 {
	out := make([]float64, len(b))
	for i, v := range b {
		out[i] = float64(v>>10) / 1024
	}
	return out
}
