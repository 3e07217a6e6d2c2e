package peer

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/unplug-dev/unplug/stack/fault"
)

func TestBuild(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("fd00:5eed::2")
	drop, err := fault.ParseSpec("drop port=80")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		addrs     []netip.Addr
		faults    []fault.Spec
		above     bool
		wantErr   bool
		wantRules int
	}{
		{name: "both families, a rule", addrs: []netip.Addr{v4, v6}, faults: []fault.Spec{drop}, wantRules: 1},
		{name: "wrapped NIC link", addrs: []netip.Addr{v4}, above: true},
		{name: "bad address: partial peer, NIC owns the link", addrs: []netip.Addr{{}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			link := channel.New(16, 1500, "")
			wrapped := false
			cfg := Config{Clock: faketime.NewManualClock(), FaultSeed: 1, Faults: tc.faults, Addrs: tc.addrs}
			if tc.above {
				cfg.Above = func(f *fault.Endpoint) stack.LinkEndpoint { wrapped = true; return f }
			}
			p, err := Build(link, cfg)
			if p == nil {
				t.Fatalf("Build returned no peer: %v", err)
			}
			t.Cleanup(func() { p.Stack.Close(); p.Stack.Wait() })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !p.NICOwnsLink {
				t.Fatal("NICOwnsLink false after the NIC was created")
			}
			if wrapped != tc.above {
				t.Fatalf("Above called %v, want %v", wrapped, tc.above)
			}
			if p.Fault.Controller() != p.Controller {
				t.Fatal("the fault layer runs other rules than Peer.Controller")
			}
			if got := len(p.Controller.Status()); got != tc.wantRules {
				t.Fatalf("%d rules installed, want %d", got, tc.wantRules)
			}
			if tc.wantErr {
				return
			}
			have := map[tcpip.Address]bool{}
			for _, a := range p.Stack.AllAddresses()[NIC] {
				have[a.AddressWithPrefix.Address] = true
			}
			for _, a := range tc.addrs {
				if !have[tcpip.AddrFromSlice(a.AsSlice())] {
					t.Errorf("address %s missing from the NIC (have %v)", a, have)
				}
			}
		})
	}
}
