package stack

import (
	"testing"

	"github.com/unplug-dev/unplug/stack/services"
)

// TestPeerCutsWhatRulesConcern echoes 2 MiB from the kernel through the
// peer's echo (IPv4 and IPv6) on an offload TUN in a private namespace and
// counts, each way, the super-packets cut into segments to be judged one
// by one: none when no rule concerns the connection that way (no rules,
// rules for other ports or the other direction), every one when a rule
// on it might act on a segment (a loss rule tracks its connection both
// ways) or an observer records them. Every byte must arrive exactly
// either way, and a rule must not count segments it does not concern.
func TestPeerCutsWhatRulesConcern(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name          string
		rules         []string
		observe       bool
		cutIn, cutOut bool
	}{
		{"no rules", nil, false, false, false},
		{"rules for other ports", []string{"drop port=61001", "loss 50% port=61002", "delay 10ms port=61003"}, false, false, false},
		{"rule out that never acts", []string{"drop flags=rst dir=out"}, false, false, true},
		{"rule in that never acts", []string{"drop flags=rst dir=in port=7"}, false, true, false},
		{"loss in", []string{"loss 1% dir=in"}, false, true, true},
		{"observed", nil, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newHostileNamespace(t)
			opts := Options{Device: ns.Device(), Faults: parseSpecs(t, tc.rules...), Seed: 7, Services: services.Config{Echo: 7}}
			if tc.observe {
				opts.Observer = &wireCheck{mtu: ns.Device().MTU()}
			}
			peer := startPeer(t, opts)
			echoEachFamily(t, ns, patterned(2<<20))
			off := peer.OffloadStats()
			t.Logf("offload %+v", off)
			if off.SuperPackets == 0 || off.Segments < 2*off.SuperPackets || off.SentSuper == 0 || off.SentSegments < 2*off.SentSuper {
				t.Fatalf("super-packets of several segments each: %d of %d segments in, %d of %d out; want many each way", off.SuperPackets, off.Segments, off.SentSuper, off.SentSegments)
			}
			for _, c := range []struct {
				way     string
				cut, of uint64
				cutAll  bool
			}{{"in", off.Cut, off.SuperPackets, tc.cutIn}, {"out", off.SentCut, off.SentSuper, tc.cutOut}} {
				want := uint64(0)
				if c.cutAll {
					want = c.of
				}
				if c.cut != want {
					t.Errorf("%s: cut %d of %d super-packets, want %d", c.way, c.cut, c.of, want)
				}
			}
			for _, r := range peer.Controller().Status() {
				if !tc.cutIn && !tc.cutOut && r.Matched != 0 {
					t.Errorf("rule %q matched %d segments of a connection it does not concern", r.Spec, r.Matched)
				}
			}
		})
	}
}
