package fault

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"drop", Spec{Action: ActDrop, Dir: Both}},
		{"drop dir=in for=3s", Spec{Action: ActDrop, Dir: In, For: 3 * time.Second}},
		{"loss 20% dir=out", Spec{Action: ActLoss, Loss: 0.2, Dir: Out}},
		{"loss 0.5%", Spec{Action: ActLoss, Loss: 0.005, Dir: Both}},
		{"delay 150ms", Spec{Action: ActDelay, Delay: 150 * time.Millisecond, Dir: Both}},
		{"delay 150ms jitter=20ms port=80", Spec{Action: ActDelay, Delay: 150 * time.Millisecond, Jitter: 20 * time.Millisecond, Port: 80, Dir: Both}},
		{"drop flags=syn,fin after=2s count=3", Spec{Action: ActDrop, Dir: Both, Flags: ClassSYN | ClassFIN, After: 2 * time.Second, Count: 3}},
		{"  drop   dir=both  flags=ack-only ", Spec{Action: ActDrop, Dir: Both, Flags: ClassAckOnly}},
		{"drop flags=data dir=out", Spec{Action: ActDrop, Dir: Out, Flags: ClassData}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		in, token string
	}{
		{"", ""},
		{"explode", "explode"},
		{"loss", "loss"},
		{"loss 20", "20"},
		{"loss 120%", "120%"},
		{"loss 0%", "0%"},
		{"loss x%", "x%"},
		{"delay", "delay"},
		{"delay fast", "fast"},
		{"delay -1s", "-1s"},
		{"delay dir=in", "delay"},
		{"drop dir=sideways", "dir=sideways"},
		{"drop port=0", "port=0"},
		{"drop port=70000", "port=70000"},
		{"drop flags=urg", "flags=urg"},
		{"drop for=0s", "for=0s"},
		{"drop after=soon", "after=soon"},
		{"drop count=-1", "count=-1"},
		{"drop jitter=5ms", "jitter=5ms"},
		{"drop dir=in dir=out", "dir=out"},
		{"drop bogus", "bogus"},
		{"drop color=red", "color=red"},
		{"drop port=", "port="},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseSpec(tt.in)
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("ParseSpec(%q) error = %v, want *SpecError", tt.in, err)
			}
			if se.Token != tt.token {
				t.Errorf("bad token = %q, want %q (%v)", se.Token, tt.token, err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tt.token) {
				t.Errorf("error %q must be one line naming %q", msg, tt.token)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"drop", "loss 20% dir=out", "delay 150ms jitter=5ms", "drop flags=syn,data port=80 after=1s for=2s count=3", "drop dir=", "loss %"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := ParseSpec(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("multi-line error for %q: %v", s, err)
			}
			return
		}
		again, err := ParseSpec(sp.String())
		if err != nil || again != sp {
			t.Fatalf("%q parsed to %+v, whose String %q reparses to %+v, %v", s, sp, sp.String(), again, err)
		}
	})
}
