package tun

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSysctlPath(t *testing.T) {
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"net.ipv4.tcp_retries2", "/proc/sys/net/ipv4/tcp_retries2", true},
		{"net/ipv4/conf/eth0.1/rp_filter", "/proc/sys/net/ipv4/conf/eth0.1/rp_filter", true},
		{"net.ipv4.tcp_rto_min_us", "/proc/sys/net/ipv4/tcp_rto_min_us", true},
		{"kernel.hostname", "", false},
		{"vm.swappiness", "", false},
		{"net", "", false},
		{"net/../kernel/hostname", "", false},
		{"net..ipv4", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sysctlPath(tt.name)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("sysctlPath(%q) = %q, %v; want %q, ok=%v", tt.name, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestNamesDevice(t *testing.T) {
	sysctls := map[string]string{
		"net.ipv4.tcp_retries2":           "3",
		"net.ipv6.conf.unplug0.hop_limit": "7",
		"net/ipv4/conf/unplug0/rp_filter": "0",
		"net.ipv6.conf.default.hop_limit": "9",
	}
	var deferred []string
	for name := range sysctls {
		if namesDevice(name, "unplug0") {
			deferred = append(deferred, name)
		}
	}
	want := map[string]bool{"net.ipv6.conf.unplug0.hop_limit": true, "net/ipv4/conf/unplug0/rp_filter": true}
	got := map[string]bool{}
	for _, d := range deferred {
		got[d] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("deferred %v, want %v", got, want)
	}
}

func TestRootlessErrorsAreOneLine(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"userns disabled", usernsDisabled("x is 0", "sysctl -w x=1"), "sysctl -w x=1"},
		{"clone denied, rootless", cloneError(unix.EPERM, true), "user namespace"},
		{"clone denied, root", cloneError(unix.EPERM, false), "CAP_SYS_ADMIN"},
		{"no capabilities in userns", rootlessInitError(unix.EPERM, true), "inside the user namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			if !errors.Is(tt.err, ErrPermission) || !errors.Is(tt.err, unix.EPERM) ||
				strings.Contains(msg, "\n") || !strings.Contains(msg, tt.want) {
				t.Fatalf("%q: want a one-line ErrPermission/EPERM containing %q", msg, tt.want)
			}
		})
	}
	if err := rootlessInitError(unix.EINVAL, true); err != unix.EINVAL {
		t.Fatalf("non-EPERM error rewritten: %v", err)
	}
}
