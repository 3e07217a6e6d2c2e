package tun

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// tunPath is the TUN clone device.
const tunPath = "/dev/net/tun"

// Create creates a TUN device in the calling process's network namespace,
// sets its MTU and host addresses and brings it up. It needs CAP_NET_ADMIN
// there; unplug calls it inside a private namespace (see NewNamespace).
// Closing the returned Device removes the interface.
//
// Failures are one-line errors matching ErrExists, ErrNoTunDevice or
// ErrPermission with errors.Is.
func Create(cfg Config) (Device, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	c, err := openRtnl()
	if err != nil {
		return nil, fmt.Errorf("create tun: %w", err)
	}
	defer c.Close()
	if err := checkNameFree(c, cfg.Name); err != nil {
		return nil, err
	}
	if err := probeCreate(cfg.Name); err != nil {
		return nil, err
	}
	dev, name, err := openDevice(cfg)
	if err != nil {
		return nil, createError(err, cfg.Name)
	}
	li, err := c.linkByName(name)
	if err == nil {
		err = configureLink(c, li.index, cfg)
	}
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("configure tun %s: %w", name, err)
	}
	return dev, nil
}

// openDevice opens a new TUN for cfg: with IFF_VNET_HDR and offloads when
// cfg.Offload asks for them and the kernel has them, through water
// otherwise.
func openDevice(cfg Config) (Device, string, error) {
	if !cfg.Offload {
		f, name, err := openWater(cfg.Name, false)
		if err != nil {
			return nil, "", err
		}
		return newFileDevice(f, name, cfg.MTU), name, nil
	}
	f, name, err := openOffload(cfg.Name)
	if errors.Is(err, errNoOffload) {
		cfg.Offload = false
		return openDevice(cfg)
	}
	if err != nil {
		return nil, "", err
	}
	dev, err := newOffloadDevice(f, name, cfg.MTU)
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return dev, name, nil
}

// Attach opens an existing persistent TUN device, for example one an
// administrator made with `ip tuntap add unplug0 mode tun user $USER` and
// configured. It changes neither addresses nor MTU, and Close leaves the
// device in place. mtu 0 means the device's MTU; any other value must match
// it, since the netstack and the device must agree.
//
// A missing device is an error matching ErrNotFound: Attach never creates
// one.
func Attach(name string, mtu int) (Device, error) {
	if name == "" {
		return nil, errors.New("attach tun: no interface name given: pass --attach NAME")
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	c, err := openRtnl()
	if err != nil {
		return nil, fmt.Errorf("attach tun: %w", err)
	}
	defer c.Close()
	li, err := c.linkByName(name)
	if errors.Is(err, unix.ENODEV) {
		return nil, errNotFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("attach tun %q: %w", name, err)
	}
	if mtu, err = checkAttachable(name, li, mtu); err != nil {
		return nil, err
	}
	return attachLink(c, name, li, mtu)
}

// attachLink opens name with water and makes sure it is still the device
// checkAttachable looked at: had it vanished in between, TUNSETIFF would
// have created a new one, which is removed again.
func attachLink(c *rtnl, name string, li linkInfo, mtu int) (Device, error) {
	fd, err := openTunNode()
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	f, _, err := openWater(name, true)
	if err != nil {
		return nil, attachError(err, name)
	}
	if now, err := c.linkByName(name); err != nil || now.index != li.index {
		clearPersist(f)
		f.Close()
		return nil, errNotFound(name)
	}
	return newFileDevice(f, name, mtu), nil
}

// checkNameFree fails with ErrExists when name is taken; water would
// otherwise attach to (and reconfigure) an existing persistent device.
func checkNameFree(c *rtnl, name string) error {
	if name == "" {
		return nil
	}
	_, err := c.linkByName(name)
	switch {
	case err == nil:
		return errExists(name)
	case errors.Is(err, unix.ENODEV):
		return nil
	default:
		return fmt.Errorf("create tun %q: look up name: %w", name, err)
	}
}

// probeCreate checks, creating nothing, that /dev/net/tun opens and that the
// kernel lets this process create a TUN device. water leaks its descriptor
// when TUNSETIFF fails, so the common failures are caught here first.
// TUNSETIFF with neither IFF_TUN nor IFF_TAP for an unused name checks
// CAP_NET_ADMIN and then fails with EINVAL before anything is created.
func probeCreate(name string) error {
	fd, err := openTunNode()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("create tun %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_NO_PI)
	err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL):
		return nil
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return errNoNetAdmin(err, name)
	default:
		return fmt.Errorf("create tun %q: %w", name, err)
	}
}

// openTunNode opens /dev/net/tun, turning the usual failures into
// one-line errors with the fix.
func openTunNode() (int, error) {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return -1, errNoTunDevice(err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return -1, errTunAccess(err, os.Geteuid())
	default:
		return -1, fmt.Errorf("open %s: %w", tunPath, err)
	}
}

// openWater opens name with water (TUN, no packet information) and marks
// the descriptor close-on-exec. ForkLock keeps a concurrent fork from
// inheriting it in between. persist must be true for attached devices:
// water otherwise clears the persist flag, and Close would delete them.
func openWater(name string, persist bool) (*os.File, string, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name, Persist: persist},
	})
	if err != nil {
		return nil, "", err
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, "", fmt.Errorf("open tun %q: water returned %T, not a file", name, ifce.ReadWriteCloser)
	}
	if err := setCloseOnExec(f); err != nil {
		f.Close()
		return nil, "", err
	}
	return f, ifce.Name(), nil
}

// setCloseOnExec sets FD_CLOEXEC through SyscallConn: f.Fd() would switch
// the descriptor to blocking mode and take it off Go's poller.
func setCloseOnExec(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("set close-on-exec: %w", err)
	}
	return rc.Control(func(fd uintptr) { unix.CloseOnExec(int(fd)) })
}

// clearPersist makes a device f created by mistake go away on close.
func clearPersist(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 0) })
	}
}

// createError classifies a water failure in Create (probeCreate already
// caught the common ones, so these are races).
func createError(err error, name string) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return errNoNetAdmin(err, name)
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EINVAL):
		return errExists(name)
	default:
		return fmt.Errorf("create tun %q: %w", name, err)
	}
}

// checkAttachable explains, before water touches it, why name cannot be
// attached; it returns the MTU to use.
func checkAttachable(name string, li linkInfo, mtu int) (int, error) {
	switch {
	case li.kind != "tun":
		return 0, fmt.Errorf("attach tun: interface %q is not a TUN device: create one with ip tuntap add NAME mode tun user $USER", name)
	case li.tun.tap:
		return 0, fmt.Errorf("attach tun: %q is a TAP device: unplug needs a TUN (ip tuntap add NAME mode tun user $USER)", name)
	case li.tun.multiQueue:
		return 0, fmt.Errorf("attach tun: %q was created with multi_queue: recreate it without", name)
	case li.carrier:
		return 0, fmt.Errorf("attach tun: %q is in use by another process: stop it or attach another device", name)
	case notTunOwner(li.tun):
		return 0, newUserError(ErrPermission, unix.EPERM,
			"attach tun: %q belongs to another user (owner %s, group %d): %s",
			name, ownerString(li.tun.owner), li.tun.group, recreateHint(name))
	case mtu != 0 && mtu != li.mtu:
		return 0, fmt.Errorf("attach tun: %q has MTU %d, not %d: use --mtu %d, or change it with ip link set %s mtu %d",
			name, li.mtu, mtu, li.mtu, name, mtu)
	}
	return li.mtu, nil
}

// notTunOwner mirrors the kernel's tun_not_capable for a process without
// CAP_NET_ADMIN (approximated as: not root). Inside a user namespace an
// owner the namespace does not map reads as the overflow uid (65534), the
// very uid a container's nobody has: that owner passes here, and if it is
// not really this user, opening the device fails and attachError explains.
func notTunOwner(ti tunInfo) bool {
	if os.Geteuid() == 0 {
		return false
	}
	if ti.owner >= 0 && ti.owner != os.Geteuid() {
		return true
	}
	if ti.group < 0 || ti.group == os.Getegid() {
		return false
	}
	groups, _ := os.Getgroups()
	return !slices.Contains(groups, ti.group)
}

// attachError classifies a water failure in Attach.
func attachError(err error, name string) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return newUserError(ErrPermission, err,
			"attach tun %q: %v: it belongs to another user: %s", name, err, recreateHint(name))
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("attach tun: %q is in use by another process: %w", name, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("attach tun: %q is not a single-queue TUN device: %w", name, err)
	default:
		return fmt.Errorf("attach tun %q: %w", name, err)
	}
}

// ownerString prints a device owner, marking the overflow uid inside a
// user namespace for what it may be: a uid the namespace does not map.
func ownerString(owner int) string {
	if owner >= 0 && owner == overflowUID() && inUserns() {
		return fmt.Sprintf("%d, the overflow uid: perhaps a host uid this user namespace does not map", owner)
	}
	return fmt.Sprint(owner)
}

// recreateHint says how to make the device this user's. ip tuntap runs
// outside the container and takes a uid as the host sees it, which inside
// a user namespace (rootless or --userns containers) is not this uid.
func recreateHint(name string) string {
	uid := os.Geteuid()
	m := readUIDMap(procUIDMap)
	if host, ok := outsideID(m, uid); ok && !initialUserns(m) {
		return fmt.Sprintf("recreate it from outside the user namespace with ip tuntap add %s mode tun user %d "+
			"(uid %d here is uid %d there)", name, host, uid, host)
	}
	return fmt.Sprintf("recreate it with ip tuntap add %s mode tun user %d", name, uid)
}
