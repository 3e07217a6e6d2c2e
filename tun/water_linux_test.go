package tun

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/tuntest"
)

// inPrivateNetns returns true when the calling test runs in a private
// network namespace, so it may create devices directly. Called by the
// top-level test run, it re-executes the test in one (as root) and returns
// false.
func inPrivateNetns(t *testing.T) bool {
	t.Helper()
	if inStage("netns") {
		return true
	}
	requireRoot(t)
	tuntest.RunStage(t, stageEnv, "netns", "", ".", &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	})
	return false
}

// linkExists looks name up in the current network namespace.
func linkExists(t *testing.T, name string) (linkInfo, bool) {
	t.Helper()
	c, err := openRtnl()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	li, err := c.linkByName(name)
	if errors.Is(err, unix.ENODEV) {
		return li, false
	}
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	return li, true
}

func TestCreate(t *testing.T) {
	if !inPrivateNetns(t) {
		return
	}
	cfg := DefaultConfig()
	cfg.Name, cfg.MTU = "created0", 1400
	dev, err := Create(cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	li, ok := linkExists(t, "created0")
	if !ok || li.kind != "tun" || li.mtu != 1400 || li.tun.persist || !li.carrier || li.txqlen != txQueueLen {
		t.Fatalf("created link %+v (exists %v); want an attached, non-persistent tun, MTU 1400, queue %d", li, ok, txQueueLen)
	}
	if dev.Name() != "created0" || dev.MTU() != 1400 {
		t.Fatalf("device %s MTU %d", dev.Name(), dev.MTU())
	}
	if _, err := Create(cfg); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := linkExists(t, "created0"); ok {
		t.Fatal("created0 still exists after Close")
	}
	if _, err := dev.Write([]byte{0x45}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
}

func TestCreateErrors(t *testing.T) {
	if !inPrivateNetns(t) {
		return
	}
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want error
		text string
	}{
		{"name taken by lo", with(func(c *Config) { c.Name = "lo" }), ErrExists, "--attach lo"},
		{"bad MTU", with(func(c *Config) { c.MTU = 20 }), nil, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, err := Create(tt.cfg)
			if err == nil {
				dev.Close()
				t.Fatal("Create succeeded")
			}
			if (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.text)
			}
		})
	}
}

// makePersistentTun creates a persistent, detached TUN the way
// `ip tuntap add NAME mode tun` does, and removes it at cleanup.
func makePersistentTun(t *testing.T, name string) {
	t.Helper()
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		t.Fatalf("TUNSETPERSIST: %v", err)
	}
	t.Cleanup(func() { removePersistentTun(t, name) })
}

// removePersistentTun attaches to name and clears its persist flag, so the
// device goes away when the descriptor closes.
func removePersistentTun(t *testing.T, name string) {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Errorf("reattach %s: %v", name, err)
		return
	}
	unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0)
}

func TestAttach(t *testing.T) {
	if !inPrivateNetns(t) {
		return
	}
	makePersistentTun(t, "persist0")
	configurePersistent(t, "persist0")
	dev, err := Attach("persist0", 0)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if dev.Name() != "persist0" || dev.MTU() != DefaultMTU {
		t.Fatalf("attached %s MTU %d", dev.Name(), dev.MTU())
	}
	if _, err := Attach("persist0", 0); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Attach = %v, want an in-use error", err)
	}
	checkAttachedCarries(t, dev)
	dev.Close()
	li, ok := linkExists(t, "persist0")
	if !ok || !li.tun.persist {
		t.Fatalf("persist0 after Close: %+v (exists %v); Close must leave it, persistent", li, ok)
	}
	if li.carrier {
		t.Fatal("persist0 still has carrier: the descriptor was not released")
	}
	dev, err = Attach("persist0", DefaultMTU)
	if err != nil {
		t.Fatalf("re-Attach with matching MTU: %v", err)
	}
	dev.Close()
}

// configurePersistent gives a persistent TUN the default addresses, as an
// administrator would before unplug attaches.
func configurePersistent(t *testing.T, name string) {
	t.Helper()
	c, err := openRtnl()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	li, err := c.linkByName(name)
	if err == nil {
		err = configureLink(c, li.index, DefaultConfig())
	}
	if err != nil {
		t.Fatalf("configure %s: %v", name, err)
	}
}

// checkAttachedCarries sends a datagram from this (private) namespace to
// the peer address and reads it from the attached device.
func checkAttachedCarries(t *testing.T, dev Device) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	payload := []byte("through an attached tun")
	if err := unix.Sendto(fd, payload, 0, &unix.SockaddrInet4{Port: 9, Addr: peer4.As4()}); err != nil {
		t.Fatalf("sendto: %v", err)
	}
	pkt := awaitPacket(t, dev, func(p []byte) bool {
		u, ok := parseUDP(p)
		return ok && string(u.payload) == string(payload)
	})
	if u, _ := parseUDP(pkt); u.dst != netip.AddrPortFrom(peer4, 9) {
		t.Fatalf("packet to %v", u.dst)
	}
}

func TestAttachErrors(t *testing.T) {
	if !inPrivateNetns(t) {
		return
	}
	makePersistentTun(t, "persist1")
	tests := []struct {
		name, dev string
		mtu       int
		want      error
		text      string
	}{
		{"missing", "nope0", 0, ErrNotFound, "ip tuntap add nope0"},
		{"not a tun", "lo", 0, nil, "not a TUN device"},
		{"mtu mismatch", "persist1", 9000, nil, "has MTU 1500, not 9000"},
		{"no name", "", 0, nil, "--attach NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, err := Attach(tt.dev, tt.mtu)
			if err == nil {
				dev.Close()
				t.Fatal("Attach succeeded")
			}
			if (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) ||
				strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %q, want a one-line %v containing %q", err, tt.want, tt.text)
			}
		})
	}
	if _, ok := linkExists(t, "nope0"); ok {
		t.Fatal("Attach created the missing device")
	}
}
