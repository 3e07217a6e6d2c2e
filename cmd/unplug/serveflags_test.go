package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/unplug-dev/unplug/stack/control"
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

// TestControlAdvice: the control package's errors get the command line's
// fix; other errors pass unchanged.
func TestControlAdvice(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("no unplug serve is listening on /x: %w", control.ErrNoServer),
			"no unplug serve is listening on /x: start the server or choose the socket it listens on (`unplug serve`, --control PATH)"},
		{fmt.Errorf("control socket path /x is too long; %w", control.ErrShorterPath),
			"control socket path /x is too long; choose a shorter control socket path (--control PATH)"},
		{fmt.Errorf("/x exists and is not a socket; remove it or %w", control.ErrSocketPath),
			"/x exists and is not a socket; remove it or choose another control socket path (--control PATH)"},
		{errors.New("other"), "other"},
	}
	for _, tt := range tests {
		if got := controlAdvice(tt.err); got.Error() != tt.want {
			t.Errorf("controlAdvice(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
