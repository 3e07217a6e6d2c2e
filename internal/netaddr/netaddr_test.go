package netaddr

import (
	"net/netip"
	"testing"
)

// TestAddressesStayOffTheInternet: every default lies in the ranges the
// project may use (198.18.0.0/15, fd00::/8) and each peer shares its host's
// prefix, so the TUN route reaches it.
func TestAddressesStayOffTheInternet(t *testing.T) {
	bench, ula := netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("fd00::/8")
	tests := []struct {
		name   string
		addr   netip.Addr
		within netip.Prefix
	}{
		{"Host4", Host4, bench}, {"Peer4", Peer4, bench},
		{"Host6", Host6, ula}, {"Peer6", Peer6, ula},
		{"Peer4 on HostPrefix4", Peer4, HostPrefix4()},
		{"Peer6 on HostPrefix6", Peer6, HostPrefix6()},
	}
	for _, tt := range tests {
		if !tt.within.Contains(tt.addr) {
			t.Errorf("%s = %v is outside %v", tt.name, tt.addr, tt.within)
		}
	}
	if Host4 == Peer4 || Host6 == Peer6 {
		t.Error("host and peer share an address")
	}
}
