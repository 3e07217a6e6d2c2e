package fault

import (
	"testing"

	"github.com/unplug-dev/unplug/internal/packet"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
)

// TestLossRetransmissionAfterBusyLink: a retransmission of a lost segment
// gets a fresh draw however many other segments the link carried since the
// segment's last transmission — the 10 000-connection soak's case, where a
// segment waits out a long RTO while the other connections send hundreds
// of thousands of segments. The rule once counted transmissions in a table
// of 65 536 segments; a segment it forgot was drawn again as a first
// transmission, so every retransmission met the first one's fate: lost
// again and again, the sender's RTO doubling towards its cap (issue 14:
// 10 timeouts in a row at 5 % loss). This test failed on that code.
func TestLossRetransmissionAfterBusyLink(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload int // the victim's: a data segment, or a pure (duplicate) ACK
	}{
		{"retransmitted data", 100},
		{"duplicate ACK", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctl := NewController(faketime.NewManualClock(), 3)
			ctl.AddString("loss 50%")
			decide := func(sport uint16, flags uint8, seq uint32, payload int) bool {
				s := seg{src: app4, dst: peer4, sport: sport, dport: 80, flags: flags, seq: seq, win: 65535, payload: payload}
				return ctl.Decide(parsed(t, packet.In, s.build())).Verdict == Dropped
			}
			for decide(1, packet.FlagSYN, 0, 0) {
			}
			for decide(2, packet.FlagSYN, 1000, 0) {
			}
			// The victim: the first of connection 1's segments the rule
			// loses (data segments move on; ACKs stay at seq 1).
			seq := uint32(1)
			for !decide(1, packet.FlagACK, seq, tc.payload) {
				seq += uint32(tc.payload)
			}
			busy := uint32(1001)
			const rounds = 16
			passed := 0
			for range rounds {
				// Connection 2 carries more distinct segments than the old
				// table held before connection 1 sends the victim again.
				for range 1<<16 + 1 {
					decide(2, packet.FlagACK, busy, 100)
					busy += 100
				}
				if !decide(1, packet.FlagACK, seq, tc.payload) {
					passed++
				}
			}
			// At 50 %, all 16 with one fate has probability 3e-5. The old
			// table lost every data resend (the first transmission's
			// fate) and passed every duplicate ACK (the first ACK's).
			if passed == 0 || passed == rounds {
				t.Fatalf("%d of %d resends of a segment got through at 50 %% loss: each met one earlier transmission's fate", passed, rounds)
			}
		})
	}
}
