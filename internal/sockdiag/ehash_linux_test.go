package sockdiag

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkDumpEhash measures what a dump costs in a namespace that
// shares the host's TCP hash table (as tun.NewNamespace makes them) and in
// one created with its own 1024-bucket table (tcp_child_ehash_entries set
// in a parent namespace), each holding 50 listeners.
func BenchmarkDumpEhash(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for _, tc := range []struct{ name, child string }{{"shared", ""}, {"private1024", "1024"}, {"private4096", "4096"}, {"private16384", "16384"}} {
		b.Run(tc.name, func(b *testing.B) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				// The namespaces belong to this thread only; it exits with
				// the goroutine, still locked.
				runtime.LockOSThread()
				if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
					b.Error(err)
					return
				}
				if tc.child != "" {
					if err := os.WriteFile("/proc/sys/net/ipv4/tcp_child_ehash_entries", []byte(tc.child), 0); err != nil {
						b.Error(err)
						return
					}
					if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
						b.Error(err)
						return
					}
				}
				size, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_ehash_entries")
				b.Logf("tcp_ehash_entries %s (negative: the host's, shared)", strings.TrimSpace(string(size)))
				var fds []int
				defer func() {
					for _, fd := range fds {
						unix.Close(fd)
					}
				}()
				for range 50 {
					fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						b.Error(err)
						return
					}
					fds = append(fds, fd)
					unix.Bind(fd, &unix.SockaddrInet4{})
					unix.Listen(fd, 1)
				}
				nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
				if err != nil {
					b.Error(err)
					return
				}
				f := os.NewFile(uintptr(nl), "sock_diag")
				defer f.Close()
				d := NewDumper(f)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if socks, err := d.Dump(); err != nil || len(socks) != 50 {
						b.Errorf("%d sockets, %v; want 50", len(socks), err)
						return
					}
				}
			}()
			<-done
		})
	}
}
