package packet

import "testing"

func TestDirection(t *testing.T) {
	tests := []struct {
		d       Direction
		name    string
		reverse Direction
	}{
		{In, "in", Out},
		{Out, "out", In},
		{Both, "both", Both},
		{0, "none", 0},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.name {
			t.Errorf("Direction(%d).String() = %q, want %q", tt.d, got, tt.name)
		}
		if got := tt.d.Reverse(); got != tt.reverse {
			t.Errorf("%v.Reverse() = %v, want %v", tt.d, got, tt.reverse)
		}
	}
	if Both&In == 0 || Both&Out == 0 || In&Out != 0 {
		t.Errorf("Both = %b must contain In = %b and Out = %b, which must not overlap", Both, In, Out)
	}
}

// TestFlags pins the flag bits to the TCP header's layout (RFC 9293 §3.1).
func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		bit  uint8
		want uint8
	}{
		{"FIN", FlagFIN, 0x01}, {"SYN", FlagSYN, 0x02}, {"RST", FlagRST, 0x04}, {"PSH", FlagPSH, 0x08},
		{"ACK", FlagACK, 0x10}, {"URG", FlagURG, 0x20}, {"ECE", FlagECE, 0x40}, {"CWR", FlagCWR, 0x80},
	}
	for _, tt := range tests {
		if tt.bit != tt.want {
			t.Errorf("Flag%s = %#x, want %#x", tt.name, tt.bit, tt.want)
		}
	}
}

func TestFlagString(t *testing.T) {
	tests := []struct {
		f    uint8
		want string
	}{
		{0, ""},
		{FlagSYN, "S"},
		{FlagSYN | FlagACK, "S."},
		{FlagPSH | FlagACK, "P."},
		{FlagFIN | FlagPSH | FlagACK, "FP."},
		{FlagRST, "R"},
		{FlagACK | FlagURG | FlagECE | FlagCWR, ".UEW"},
	}
	for _, tt := range tests {
		if got := FlagString(tt.f); got != tt.want {
			t.Errorf("FlagString(%#x) = %q, want %q", tt.f, got, tt.want)
		}
	}
}
