package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

func TestPersonaFlag(t *testing.T) {
	tests := []struct {
		args []string
		want services.Persona
		err  string
	}{
		{nil, services.Persona{}, ""},
		{[]string{"--persona", "silent"}, services.Persona{Name: "silent"}, ""},
		{[]string{"--persona=silent:80"}, services.Persona{Name: "silent", Port: 80}, ""},
		{[]string{"--persona", "reboot:30s"}, services.Persona{Name: "reboot", At: 30 * time.Second}, ""},
		{[]string{"--persona", "half-open:1m"}, services.Persona{Name: "half-open", At: time.Minute}, ""},
		{[]string{"--persona", "slow-reader:64KiB"}, services.Persona{Name: "slow-reader", Rate: 65536}, ""},
		{[]string{"--persona", "grumpy"}, services.Persona{}, `persona "grumpy": unknown persona`},
		{[]string{"--persona", "reboot"}, services.Persona{}, `persona "reboot": it needs the moment`},
		{[]string{"--persona", "slow-reader:fast"}, services.Persona{}, `persona "slow-reader:fast": it needs a read rate`},
		{[]string{"--persona", "silent:0"}, services.Persona{}, `the port must be 1-65535`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := newFlagSet("serve", io.Discard)
			cfg := services.DefaultConfig()
			addPersonaFlags(fs, &cfg)
			err := parseFlags(fs, tt.args)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v, want one line containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Persona != tt.want {
				t.Fatalf("persona %+v, want %+v", cfg.Persona, tt.want)
			}
			if tt.want.Name != "" {
				again, err := services.ParsePersona(cfg.Persona.String())
				if err != nil || again != tt.want {
					t.Fatalf("round trip via %q: %+v, %v", cfg.Persona.String(), again, err)
				}
			}
		})
	}
}

func TestOtherCounters(t *testing.T) {
	for _, tt := range []struct {
		r    fault.RuleStatus
		want string
	}{
		{fault.RuleStatus{}, ""},
		{fault.RuleStatus{Rejected: 3}, "  (rejected 3)"},
		{fault.RuleStatus{Corrupted: 1, Healed: 2}, "  (corrupted 1, healed 2)"},
	} {
		if got := otherCounters(tt.r); got != tt.want {
			t.Errorf("otherCounters(%+v) = %q, want %q", tt.r, got, tt.want)
		}
	}
}
