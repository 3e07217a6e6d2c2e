package vlink

import (
	"testing"
	"time"

	"github.com/unplug-dev/unplug/stack/fault"
)

// TestResentSYNRoundTrip: after a lost SYN or SYN-ACK, the side that
// resent measures the handshake's round trip from the resent segment, as
// Linux does (netstack.FreshSYNTimestamps), not from its first one a
// second or more earlier: on a 5 ms link its first RTT sample is 10 ms,
// exactly, in virtual time. (When the SYN-ACK is lost, the client's RTT
// is a second: the resent SYN-ACK echoes the first SYN's timestamp, as a
// Linux server's does too.)
func TestResentSYNRoundTrip(t *testing.T) {
	const delay = 5 * time.Millisecond
	for _, tc := range []struct {
		name   string
		rule   string
		client bool // the client resent: check its RTT, else the peer's
	}{
		{"SYN lost", "drop dir=in flags=syn count=1", true},
		{"two SYNs lost", "drop dir=in flags=syn count=2", true},
		{"SYN-ACK lost", "drop dir=out flags=syn count=1", false},
		{"two SYN-ACKs lost", "drop dir=out flags=syn count=2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := fault.ParseSpec(tc.rule)
			if err != nil {
				t.Fatal(err)
			}
			p := newPair(t, PairOptions{Delay: delay, Faults: []fault.Spec{sp}})
			l, err := p.Listen(80)
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.Connect(PeerAddr4.String(), 80, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var srv *Conn
			if err := p.RunUntil(func() bool { srv, err = l.Accept(); return err == nil }, time.Minute); err != nil {
				t.Fatal(err)
			}
			if p.Now() < time.Second {
				t.Fatalf("connected at %v: the rule %q dropped nothing", p.Now(), tc.rule)
			}
			side, got := "peer", srv.Info().RTT
			if tc.client {
				side, got = "client", c.Info().RTT
			}
			if want := 2 * delay; got != want {
				t.Errorf("%s RTT %v after connecting at %v, want %v", side, got, p.Now(), want)
			}
		})
	}
}
