//go:build !linux

package scenarios

import (
	"context"
	"errors"
	"net/netip"
)

// peerKernel is empty: sock_diag needs Linux.
type peerKernel struct{}

// WatchKernel needs Linux (sock_diag).
func (p *PeerRecorder) WatchKernel(ctx context.Context, peers []netip.Addr) error {
	return errors.New("the kernel's view needs Linux (sock_diag)")
}

func (p *PeerRecorder) kernelConns() ([]KernelConn, string) { return nil, "" }

func (p *PeerRecorder) stopKernel() {}

func (p *PeerRecorder) rescanKernel() {}
