package stack

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// wireCheck is an observer that checks every TCP segment the peer sends,
// as the fault layer reports it: no longer than the link's MTU, and with
// a complete, correct TCP checksum (an observer asks for them).
type wireCheck struct {
	mtu int

	mu            sync.Mutex
	segments, bad int
	firstBad      string
}

func (w *wireCheck) Observe(ev *fault.Event) {
	p := ev.Packet
	if p.Dir != packet.Out || p.Proto != packet.ProtoTCP || ev.Decision.Verdict == fault.Injected {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.segments++
	why := ""
	switch {
	case len(ev.Data) > w.mtu:
		why = "longer than the MTU"
	case !tcpChecksumOK(ev.Data):
		why = fmt.Sprintf("bad TCP checksum: %d bytes, flags %#x, field %#04x", len(ev.Data), p.Flags, binary.BigEndian.Uint16(ev.Data[len(ev.Data)-p.PayloadLen-20+16:]))
	}
	if why != "" {
		w.bad++
		if w.firstBad == "" {
			w.firstBad = why
		}
	}
}

// TestPeerSendsSuperPackets runs the peer on an offload TUN in a private
// namespace and moves data from the peer's TCP to the kernel's (echo
// replies, IPv4 and IPv6) through rules on the peer's outbound side: the
// peer's netstack builds 64 KiB super-packets, the link cuts them into
// wire segments for the fault layer, and what passes is written back as
// super-packets. Every byte must arrive exactly; with an observer every
// segment it saw is wire-sized with a correct checksum; the runs that
// passed took fewer writes than packets.
func TestPeerSendsSuperPackets(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		rules   []string
		observe bool
		merged  bool // most segments leave in runs (no rule delays them all)
	}{
		{"no rules, observed", nil, true, true},
		{"no rules, unobserved", nil, false, true},
		{"loss out, observed", []string{"loss 1% dir=out"}, true, true},
		{"loss out, unobserved", []string{"loss 1% dir=out"}, false, true},
		{"delay and jitter out", []string{"delay 1ms jitter=2ms dir=out"}, false, false},
		{"duplicate and reorder out", []string{"duplicate 2% dir=out", "reorder 2% gap=3 dir=out"}, true, true},
		{"corrupt out", []string{"corrupt 1% dir=out"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newHostileNamespace(t)
			check := &wireCheck{mtu: ns.Device().MTU()}
			opts := Options{Device: ns.Device(), Faults: parseSpecs(t, tc.rules...), Seed: 7, Services: services.Config{Echo: 7}}
			if tc.observe {
				opts.Observer = check
			}
			peer := startPeer(t, opts)
			echoEachFamily(t, ns, patterned(2<<20))
			off := peer.OffloadStats()
			st := peer.Status().Link
			t.Logf("offload %+v; link out %d, dropped %d, delayed %d", off, st.Out, st.Dropped, st.Delayed)
			if off.SentSuper == 0 || off.SentSegments < 2*off.SentSuper {
				t.Errorf("the peer sent %d super-packets cut into %d segments, want many of several segments", off.SentSuper, off.SentSegments)
			}
			if tc.merged && off.OutWrites*2 > off.OutPackets {
				t.Errorf("%d packets took %d writes: the segments were not merged again", off.OutPackets, off.OutWrites)
			}
			if len(tc.rules) > 0 && st.Dropped+st.Delayed == 0 {
				t.Errorf("the rules %q did nothing", tc.rules)
			}
			if tc.observe {
				check.mu.Lock()
				defer check.mu.Unlock()
				if check.segments == 0 || check.bad > 0 {
					t.Errorf("observer saw %d segments from the peer, %d of them wrong (first: %s)", check.segments, check.bad, check.firstBad)
				}
			}
		})
	}
}
