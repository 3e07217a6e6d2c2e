package main

import (
	"errors"
	"testing"

	"github.com/unplug-dev/unplug/stack/services"
)

// TestPortFlagError: services reports port problems in Config's terms;
// serve says which of its flags fixes them.
func TestPortFlagError(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*services.Config)
		want string
	}{
		{"http vs forward", func(c *services.Config) { c.Forwards = []services.Forward{{Port: 80, Target: "127.0.0.1:8080"}} },
			"port 80 is used by both http and forward; pick another with --http-port"},
		{"echo vs discard", func(c *services.Config) { c.Discard = 7 },
			"port 7 is used by both echo and discard; pick another with --echo-port or --discard-port"},
		{"two forwards", func(c *services.Config) {
			c.HTTP = 0
			c.Forwards = []services.Forward{{Port: 80, Target: "a:1"}, {Port: 80, Target: "b:2"}}
		}, "port 80 is used by two forwards (to a:1 and b:2); give each --forward its own port"},
		{"out of range", func(c *services.Config) { c.Sink = 70000 },
			"sink port 70000 is out of range; pick 1-65535 with --sink-port, or 0 to disable it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := services.DefaultConfig()
			tt.mod(&cfg)
			if got := portFlagError(cfg.Validate()); got == nil || got.Error() != tt.want {
				t.Fatalf("portFlagError = %v, want %q", got, tt.want)
			}
		})
	}
	other := errors.New(`forward "81=x": target must be HOST:PORT`)
	if got := portFlagError(other); got != other {
		t.Fatalf("portFlagError changed an unrelated error: %v", got)
	}
	if got := portFlagError(nil); got != nil {
		t.Fatalf("portFlagError(nil) = %v", got)
	}
}
