package tun

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestConfigNormalize(t *testing.T) {
	def := DefaultConfig()
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		wantMTU int
	}{
		{"default", def, "", DefaultMTU},
		{"zero MTU means default", with(func(c *Config) { c.MTU = 0 }), "", DefaultMTU},
		{"jumbo", with(func(c *Config) { c.MTU = 65000 }), "", 65000},
		{"no IPv6 allows small MTU", with(func(c *Config) { c.MTU = 576; c.HostPrefix6 = netip.Prefix{} }), "", 576},
		{"IPv6 needs 1280", with(func(c *Config) { c.MTU = 1279 }), "IPv6 needs MTU >= 1280", 0},
		{"MTU too small", with(func(c *Config) { c.MTU = 67; c.HostPrefix6 = netip.Prefix{} }), "out of range", 0},
		{"MTU too large", with(func(c *Config) { c.MTU = 65536 }), "out of range", 0},
		{"v6 in v4 slot", with(func(c *Config) { c.HostPrefix4 = def.HostPrefix6 }), "not IPv4", 0},
		{"v4 in v6 slot", with(func(c *Config) { c.HostPrefix6 = def.HostPrefix4 }), "not IPv6", 0},
		{"name too long", with(func(c *Config) { c.Name = "abcdefghijklmnop" }), "longer than 15", 0},
		{"name with slash", with(func(c *Config) { c.Name = "a/b" }), "not a valid interface name", 0},
		{"empty name lets kernel pick", with(func(c *Config) { c.Name = "" }), "", DefaultMTU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.MTU != tt.wantMTU {
				t.Fatalf("MTU = %d, want %d", got.MTU, tt.wantMTU)
			}
		})
	}
}

func TestDefaultConfigAddresses(t *testing.T) {
	c := DefaultConfig()
	if c.HostPrefix4.String() != "198.18.0.1/24" || c.HostPrefix6.String() != "fd00:198:18::1/64" || c.Name != "unplug0" {
		t.Fatalf("DefaultConfig() = %+v", c)
	}
}

func TestUserErrorsAreOneLineAndClassified(t *testing.T) {
	cause := errors.New("operation not permitted")
	tests := []struct {
		name string
		err  error
		kind error
		want []string
	}{
		{"exists", errExists("unplug0"), ErrExists, []string{`"unplug0" already exists`, "--tun NAME", "--attach unplug0"}},
		{"not found", errNotFound("unplug9"), ErrNotFound, []string{`"unplug9" does not exist`, "ip tuntap add unplug9"}},
		{"no tun node", errNoTunDevice(cause), ErrNoTunDevice, []string{"/dev/net/tun", "modprobe tun", "--device /dev/net/tun"}},
		{"no access", errTunAccess(cause, 1000), ErrPermission, []string{"/dev/net/tun", "uid 1000", "chmod 0666"}},
		{"no CAP_NET_ADMIN", errNoNetAdmin(cause, "unplug0"), ErrPermission, []string{"CAP_NET_ADMIN", "--attach NAME", "unplug run/unplug exec", "--cap-add NET_ADMIN", "--user 0"}},
	}
	// Hints that would mislead: the node is there (opening it is what
	// failed, or it opened), so "add --device" is not the fix.
	for _, err := range []error{errTunAccess(cause, 1000), errNoNetAdmin(cause, "unplug0")} {
		if msg := err.Error(); strings.Contains(msg, "add --device") || strings.Contains(msg, "in docker") {
			t.Errorf("message %q suggests adding the device it already has, or speaks of docker only", msg)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("message spans lines: %q", msg)
			}
			if !errors.Is(tt.err, tt.kind) {
				t.Fatalf("errors.Is(%q, %v) = false", msg, tt.kind)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}
