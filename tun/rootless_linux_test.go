package tun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/unplug-dev/unplug/internal/tuntest"
	"golang.org/x/sys/unix"
)

// nobody is the unprivileged user the rootless tests run as.
const nobody = 65534

// The rootless tests run in three processes:
//
//  1. the normal test run (root) copies the test binary somewhere nobody
//     can execute it and starts stage 2;
//  2. a root process in a private mount (and network) namespace bind-mounts
//     its own /dev/net/tun node over the real one, never changing the
//     host's, and starts stage 3;
//  3. the test proper, as uid 65534.

func TestRootlessNamespace(t *testing.T) {
	switch {
	case inStage("rootless"):
		checkRootlessNamespace(t)
	case inStage("mountns-open"):
		tuntest.MountTunNode(t, 0o666)
		tuntest.RunStage(t, stageEnv, "rootless", "", ".", nobodyAttr())
	default:
		requireRoot(t)
		dir, exe := tuntest.CopyTestBinary(t, "tun.test")
		tuntest.RunStage(t, stageEnv, "mountns-open", exe, dir, mountnsAttr())
	}
}

func TestRootlessPreconditions(t *testing.T) {
	switch {
	case inStage("rootless-denied"):
		checkRootlessDenied(t)
	case inStage("mountns-closed"):
		tuntest.MountTunNode(t, 0o600)
		tuntest.RunStage(t, stageEnv, "rootless-denied", "", ".", nobodyAttr())
	default:
		requireRoot(t)
		dir, exe := tuntest.CopyTestBinary(t, "tun.test")
		tuntest.RunStage(t, stageEnv, "mountns-closed", exe, dir, mountnsAttr())
	}
}

// checkRootlessNamespace: as nobody, with an accessible /dev/net/tun, a
// namespace works end to end and programs run as the caller's uid.
func checkRootlessNamespace(t *testing.T) {
	if os.Geteuid() != nobody {
		t.Fatalf("euid %d, want %d", os.Geteuid(), nobody)
	}
	// Here (a namespace this user does not own) CAP_NET_ADMIN is missing.
	if dev, err := Create(DefaultConfig()); err == nil {
		dev.Close()
		t.Fatal("Create without CAP_NET_ADMIN succeeded")
	} else if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("Create = %v, want ErrPermission naming CAP_NET_ADMIN", err)
	}
	ns := newTestNamespace(t, NamespaceConfig{
		TUN:     DefaultConfig(),
		Sysctls: map[string]string{"net.ipv4.tcp_retries2": "4"},
	})
	sendUDPAndCapture(t, ns, "udp4", host4, peer4)
	sendUDPAndCapture(t, ns, "udp6", host6, peer6)
	if got, err := ns.Sysctl("net.ipv4.tcp_retries2"); err != nil || got != "4" {
		t.Fatalf("Sysctl = %q, %v; want 4", got, err)
	}
	if id := strings.TrimSpace(runOutput(t, ns, "id", "-u")); id != "65534" {
		t.Fatalf("program runs as uid %s, want 65534", id)
	}
	// Rootless too, the namespace has a TCP hash table of its own; the
	// CAP_SYS_ADMIN the agent needed to create it is gone before programs
	// run (their effective set: NET_ADMIN, NET_RAW, NET_BIND_SERVICE).
	if got, err := ns.Sysctl("net.ipv4.tcp_ehash_entries"); err != nil || got != fmt.Sprint(DefaultEhashEntries) {
		t.Errorf("tcp_ehash_entries %q, %v; want %d (own table)", got, err, DefaultEhashEntries)
	}
	status := runOutput(t, ns, "grep", "^CapEff", "/proc/self/status")
	var eff uint64
	fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(status, "CapEff:")), "%x", &eff)
	if eff&(1<<unix.CAP_SYS_ADMIN) != 0 || eff&(1<<unix.CAP_NET_ADMIN) == 0 {
		t.Errorf("a program's %s: want CAP_NET_ADMIN without CAP_SYS_ADMIN", strings.TrimSpace(status))
	}
}

// checkRootlessDenied: as nobody, with /dev/net/tun mode 0600, the error
// names the device and the fix, before any process is started.
func checkRootlessDenied(t *testing.T) {
	if os.Geteuid() != nobody {
		t.Fatalf("euid %d, want %d", os.Geteuid(), nobody)
	}
	before := childPIDs(t)
	ns, err := NewNamespace(context.Background(), NamespaceConfig{TUN: DefaultConfig()})
	if err == nil {
		ns.Close()
		t.Fatal("NewNamespace succeeded without access to /dev/net/tun")
	}
	msg := err.Error()
	if !errors.Is(err, ErrPermission) || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, "/dev/net/tun") || !strings.Contains(msg, "uid 65534") || !strings.Contains(msg, "chmod 0666") {
		t.Fatalf("err = %q, want a one-line ErrPermission about /dev/net/tun for uid 65534 and its fix", msg)
	}
	if len(childPIDs(t)) != len(before) {
		t.Fatal("an agent was started although a precondition failed")
	}
}

// mountnsAttr runs a stage as root in private mount and network
// namespaces, so nothing it mounts or creates reaches the host.
func mountnsAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
}

// nobodyAttr runs a stage as uid and gid 65534 without supplementary
// groups.
func nobodyAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
}
