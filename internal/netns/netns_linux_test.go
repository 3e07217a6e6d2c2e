package netns

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestDo: fn runs in the named namespace, the caller's namespace is never
// changed, and a missing namespace is an error naming it.
func TestDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns add")
	}
	name := fmt.Sprintf("unplug-netns-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	want := inode(t, Named(name))
	before := inode(t, "/proc/self/ns/net")
	for i := range 20 { // more calls than threads: a thread left behind would show
		var got uint64
		if err := Do(Named(name), func() error {
			got = inode(t, "/proc/thread-self/ns/net")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("call %d ran in namespace %d, want %d", i, got, want)
		}
		if now := inode(t, "/proc/thread-self/ns/net"); now != before {
			t.Fatalf("after call %d the caller's thread is in namespace %d, want %d", i, now, before)
		}
	}
	if err := Do(Named(name+"-missing"), func() error { return nil }); err == nil {
		t.Fatal("Do into a missing namespace succeeded")
	}
}
