package tun

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/unplug-dev/unplug/internal/netaddr"
)

// Defaults for the TUN device unplug creates.
const (
	// DefaultName is the interface name Create uses by default.
	DefaultName = "unplug0"
	// DefaultMTU is the MTU used when Config.MTU is zero.
	DefaultMTU = 1500
	// MaxMTU is the largest MTU a TUN device accepts.
	MaxMTU = 65535
	// minMTU4 and minMTU6 are the smallest MTUs IPv4 and IPv6 allow.
	minMTU4 = 68
	minMTU6 = 1280
	// maxNameLen is IFNAMSIZ minus the terminating NUL.
	maxNameLen = 15
)

// Config describes a TUN device for Create: its name, MTU and the host-side
// addresses the kernel gets. The peer (unplug's netstack) lives at another
// address of the same prefixes, 198.18.0.2 and fd00:198:18::2 by default.
type Config struct {
	// Name is the interface name; empty lets the kernel pick (tunN).
	Name string
	// MTU is the device MTU; zero means DefaultMTU.
	MTU int
	// HostPrefix4 is the kernel's IPv4 address and on-link prefix
	// (198.18.0.1/24); an invalid (zero) prefix adds no IPv4 address.
	HostPrefix4 netip.Prefix
	// HostPrefix6 is the kernel's IPv6 address and on-link prefix
	// (fd00:198:18::1/64), added without duplicate address detection so it
	// is usable at once; an invalid (zero) prefix adds no IPv6 address.
	HostPrefix6 netip.Prefix
	// Offload opens the device with a virtio-net header and TCP
	// segmentation offload (Linux only): the kernel hands the device up to
	// 64 KiB TCP segments, which Read splits into MTU-sized packets, and
	// consecutive packets of one flow are written as one. The packets a
	// Device user sees are the same as without it; only the number of
	// system calls changes.
	Offload bool `json:",omitempty"`
}

// DefaultConfig returns the configuration unplug uses unless told
// otherwise: unplug0, MTU 1500, 198.18.0.1/24 and fd00:198:18::1/64, with
// offload (where the kernel has it: the packets are the same, the system
// calls fewer; see docs/performance.md).
func DefaultConfig() Config {
	return Config{
		Name:        DefaultName,
		MTU:         DefaultMTU,
		HostPrefix4: netaddr.HostPrefix4(),
		HostPrefix6: netaddr.HostPrefix6(),
		Offload:     true,
	}
}

// normalize fills defaults and rejects configurations the kernel would
// refuse halfway through setting the device up.
func (c Config) normalize() (Config, error) {
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if err := checkName(c.Name); err != nil {
		return c, err
	}
	if c.MTU < minMTU4 || c.MTU > MaxMTU {
		return c, fmt.Errorf("tun config: MTU %d out of range: use %d to %d", c.MTU, minMTU4, MaxMTU)
	}
	if c.HostPrefix4.IsValid() && !c.HostPrefix4.Addr().Is4() {
		return c, fmt.Errorf("tun config: host IPv4 prefix %s is not IPv4", c.HostPrefix4)
	}
	if !c.HostPrefix6.IsValid() {
		return c, nil
	}
	if !c.HostPrefix6.Addr().Is6() || c.HostPrefix6.Addr().Is4In6() {
		return c, fmt.Errorf("tun config: host IPv6 prefix %s is not IPv6", c.HostPrefix6)
	}
	if c.MTU < minMTU6 {
		return c, fmt.Errorf("tun config: IPv6 needs MTU >= %d, not %d: raise the MTU or configure no IPv6 prefix", minMTU6, c.MTU)
	}
	return c, nil
}

// checkName rejects names the kernel would refuse (or silently truncate).
func checkName(name string) error {
	switch {
	case len(name) > maxNameLen:
		return fmt.Errorf("tun config: interface name %q is longer than %d bytes", name, maxNameLen)
	case name == "." || name == "..", strings.ContainsAny(name, "/:\x00 \t\n"):
		return fmt.Errorf("tun config: %q is not a valid interface name", name)
	}
	return nil
}
