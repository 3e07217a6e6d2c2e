package scenarios

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/sockdiag"
)

// peerKernel is a PeerRecorder's kernel view, once WatchKernel started it.
type peerKernel struct {
	mu sync.Mutex
	kv *kernelView
}

// WatchKernel adds the kernel's view to a serve report when the clients
// run in serve's own network namespace (the usual `sudo unplug serve`
// and a client in another shell): it samples, through sock_diag, the
// sockets connected to one of peers, and reads their options from the
// processes holding them (pidfd_getfd needs the right to ptrace them:
// root, or the same user). It runs until ctx ends; the error says why
// there is no view.
func (p *PeerRecorder) WatchKernel(ctx context.Context, peers []netip.Addr) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	nl := os.NewFile(uintptr(fd), "sock_diag")
	ino, err := sockdiag.NetnsInode(os.Getpid())
	if err != nil {
		nl.Close()
		return err
	}
	tracker := sockdiag.NewTracker(sockdiag.NewDumper(nl))
	reader := sockdiag.NewOptionsReader(ino)
	var buf []sockdiag.Socket
	dump := func() ([]sockdiag.Socket, error) {
		socks, err := tracker.Dump()
		buf = buf[:0]
		for _, s := range socks {
			for _, a := range peers {
				if s.Dst.Addr().Unmap() == a {
					buf = append(buf, s)
					break
				}
			}
		}
		return buf, err
	}
	interval := sockdiag.DefaultInterval
	sampler := sockdiag.NewSampler(dump, reader.Options, interval)
	kv := &kernelView{sampler: sampler, tracker: tracker, reader: reader, nl: nl, interval: interval, done: make(chan struct{})}
	ctx, kv.cancel = context.WithCancel(ctx)
	p.kern.mu.Lock()
	p.kern.kv = kv
	p.kern.mu.Unlock()
	go func() {
		defer close(kv.done)
		sampler.Run(ctx)
	}()
	return nil
}

// kernelConns returns the kernel's view, if WatchKernel runs.
func (p *PeerRecorder) kernelConns() ([]KernelConn, string) {
	p.kern.mu.Lock()
	kv := p.kern.kv
	p.kern.mu.Unlock()
	if kv == nil {
		return nil, ""
	}
	what := fmt.Sprintf("sock_diag every %s in serve's own network namespace (clients there only); socket options read with pidfd_getfd + getsockopt", kv.interval)
	if err := kv.reader.Err(); err != nil {
		what += fmt.Sprintf(" (options not readable: %v)", err)
	}
	return kv.conns(p.rec.start), what
}

// stopKernel ends WatchKernel's sampling.
func (p *PeerRecorder) stopKernel() {
	p.kern.mu.Lock()
	kv := p.kern.kv
	p.kern.mu.Unlock()
	if kv != nil {
		kv.stop()
	}
}

// rescanKernel makes the next sample a full dump.
func (p *PeerRecorder) rescanKernel() {
	p.kern.mu.Lock()
	kv := p.kern.kv
	p.kern.mu.Unlock()
	if kv != nil {
		kv.rescan()
	}
}
