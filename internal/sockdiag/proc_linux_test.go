package sockdiag

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/tuntest"
)

// nsDefaults are keepalive and SYN retry defaults for test namespaces, unlike the
// kernel's, so a test can tell them from values a socket set itself.
var nsDefaults = map[string]string{
	"net.ipv4.tcp_keepalive_time":   "600",
	"net.ipv4.tcp_keepalive_intvl":  "30",
	"net.ipv4.tcp_keepalive_probes": "5",
	"net.ipv4.tcp_syn_retries":      "4",
}

// TestFindSocketsReadOptions: a program inside the namespace holds two
// connected sockets; FindSockets names its descriptors (and none of this
// process, outside the namespace), ReadOptions reads exactly the options
// it set, or the namespace's defaults where it set none.
func TestFindSocketsReadOptions(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nsDefaults)
	d := newDumper(t, ns)
	l := listen(t, ns, "127.0.0.1:0")
	dst := l.local(t).String()
	h := startHelper(t, ns, dst+" k=7/3/4,u=1234,syn=3", dst+" nodelay")

	netns, err := NetnsInode(ns.PID())
	if err != nil {
		t.Fatal(err)
	}
	if self, _ := NetnsInode(0); self == netns {
		t.Fatal("the test runs in the namespace it created")
	}
	procs, err := FindSockets(netns)
	if err != nil {
		t.Fatal(err)
	}
	socks, err := d.Dump()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	comm := filepath.Base(exe)
	comm = comm[:min(len(comm), 15)]
	want := []Options{
		{KeepAlive: true, KeepIdle: 7 * time.Second, KeepIntvl: 3 * time.Second, KeepCnt: 4, UserTimeout: 1234 * time.Millisecond, SynCnt: 3},
		// TCP_SYNCNT unset reads as the namespace's tcp_syn_retries.
		{KeepIdle: 600 * time.Second, KeepIntvl: 30 * time.Second, KeepCnt: 5, NoDelay: true, SynCnt: 4},
	}
	reader := NewOptionsReader(netns)
	for i, hs := range h.socks {
		ds, ok := findTuple(socks, hs.local, l.local(t))
		if !ok || ds.Inode == 0 || ds.State != StateEstablished {
			t.Fatalf("helper socket %s not in dump (%+v)", hs.local, ds)
		}
		var found *ProcSocket
		for j := range procs {
			if procs[j].PID == h.pid && procs[j].FD == hs.fd {
				found = &procs[j]
			}
		}
		if found == nil || found.Inode != ds.Inode || found.Comm != comm {
			t.Fatalf("FindSockets has %+v for pid %d fd %d, want inode %d comm %q; all: %+v", found, h.pid, hs.fd, ds.Inode, comm, procs)
		}
		got, err := ReadOptions(h.pid, hs.fd)
		if err != nil {
			t.Fatal(err)
		}
		if got.SndBuf <= 0 || got.RcvBuf <= 0 || got.Inode != ds.Inode {
			t.Errorf("socket %d: buffers %d/%d, inode %d; want positive buffers and inode %d", i, got.SndBuf, got.RcvBuf, got.Inode, ds.Inode)
		}
		w := want[i]
		w.SndBuf, w.RcvBuf, w.Inode = got.SndBuf, got.RcvBuf, ds.Inode
		if got != w {
			t.Errorf("socket %d: ReadOptions = %+v\nwant %+v", i, got, w)
		}
		if o, ok := reader.Options(ds.Inode); !ok || o != got {
			t.Errorf("socket %d: OptionsReader = %+v, %v (err %v), want %+v", i, o, ok, reader.Err(), got)
		}
		if ps, ok := reader.Holder(ds.Inode); !ok || ps.PID != h.pid || ps.FD != hs.fd {
			t.Errorf("socket %d: Holder = %+v, %v; want pid %d fd %d", i, ps, ok, h.pid, hs.fd)
		}
	}
	for _, ps := range procs {
		if ps.PID == os.Getpid() {
			t.Errorf("FindSockets lists this process (outside the namespace): %+v", ps)
		}
	}
	// The listener is ours, outside the namespace: no holder to read.
	if _, ok := reader.Options(inodeOf(t, l)); ok {
		t.Error("OptionsReader found the test's own listener")
	}
	if err := reader.Err(); err != nil {
		t.Errorf("OptionsReader.Err = %v", err)
	}
}

// TestReadOptionsErrors: each failure names its cause.
func TestReadOptionsErrors(t *testing.T) {
	requireRoot(t)
	ns := newTestNamespace(t, nil)
	l := listen(t, ns, "127.0.0.1:0")
	h := startHelper(t, ns, l.local(t).String()+" -")
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		pid, fd int
		errno   syscall.Errno
		want    string
	}{
		{"not a socket", h.pid, 0, 0, "not a socket"},
		{"no such descriptor", h.pid, 999, unix.EBADF, "has no descriptor 999"},
		{"exited", exited.Process.Pid, 0, unix.ESRCH, "has exited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadOptions(tc.pid, tc.fd)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.errno != 0 && !errors.Is(err, tc.errno)) {
				t.Fatalf("ReadOptions(%d, %d) = %v, want %q matching %v", tc.pid, tc.fd, err, tc.want, tc.errno)
			}
		})
	}
}

// stageEnv tells a re-executed test binary which stage it is.
const stageEnv = "UNPLUG_SOCKDIAG_TEST_STAGE"

// TestReadOptionsRootless: as an unprivileged user, a program started in
// a rootless namespace (its own user namespace) is readable, and a
// process of another user is refused with EPERM and an explanation.
func TestReadOptionsRootless(t *testing.T) {
	switch os.Getenv(stageEnv) {
	case "rootless":
		checkRootless(t)
	case "mountns":
		// A private mount namespace with a /dev/net/tun node uid 65534 may
		// open; the host's node is never changed.
		tuntest.MountTunNode(t, 0o666)
		tuntest.RunStage(t, stageEnv, "rootless", "", "", &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		})
	default:
		requireRoot(t)
		_, exe := tuntest.CopyTestBinary(t, "sockdiag.test")
		tuntest.RunStage(t, stageEnv, "mountns", exe, "", &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
		})
	}
}

// checkRootless is TestReadOptionsRootless as uid 65534.
func checkRootless(t *testing.T) {
	if os.Geteuid() != 65534 {
		t.Fatalf("euid %d, want 65534", os.Geteuid())
	}
	ns := newTestNamespace(t, nil)
	l := listen(t, ns, "127.0.0.1:0")
	h := startHelper(t, ns, l.local(t).String()+" k=7/3/4,u=1234")
	o, err := ReadOptions(h.pid, h.socks[0].fd)
	if err != nil {
		t.Fatalf("ReadOptions of our own program: %v", err)
	}
	if !o.KeepAlive || o.KeepIdle != 7*time.Second || o.KeepIntvl != 3*time.Second || o.KeepCnt != 4 || o.UserTimeout != 1234*time.Millisecond {
		t.Errorf("ReadOptions = %+v, want keepalive 7s/3s/4, user timeout 1.234s", o)
	}
	// sock_diag, /proc and the OptionsReader work rootless too.
	socks, err := newDumper(t, ns).Dump()
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	ds, ok := findTuple(socks, h.socks[0].local, l.local(t))
	if !ok || ds.UID != 65534 || ds.Inode == 0 {
		t.Fatalf("helper's socket in the dump: %+v (found %v), want uid 65534", ds, ok)
	}
	netns, err := NetnsInode(ns.PID())
	if err != nil {
		t.Fatal(err)
	}
	if ro, ok := NewOptionsReader(netns).Options(ds.Inode); !ok || ro != o {
		t.Errorf("OptionsReader = %+v, %v; want %+v", ro, ok, o)
	}
	// The parent stage runs as root: no ptrace access.
	_, err = ReadOptions(os.Getppid(), 0)
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "needs ptrace access") {
		t.Fatalf("ReadOptions of a root process = %v, want EPERM explaining ptrace access", err)
	}
	t.Logf("refused as expected: %v", err)
}
