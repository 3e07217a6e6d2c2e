package sockdiag

import (
	"errors"
	"sync"
	"syscall"
	"time"
)

// OptionsReader finds which process holds a socket inode in one network
// namespace and reads that socket's options: its Options method is the
// opts function a Sampler takes. It remembers where each inode was found
// and rescans /proc only when an inode is unknown (at most once per
// MinRescan), so calling it often is cheap.
type OptionsReader struct {
	// MinRescan bounds how often an unknown inode triggers a /proc scan.
	MinRescan time.Duration

	netns uint64
	mu    sync.Mutex
	where map[uint64]ProcSocket
	last  time.Time // last scan
	err   error     // last error other than "not found"
}

// NewOptionsReader returns an OptionsReader for the namespace with inode
// netnsIno (see NetnsInode).
func NewOptionsReader(netnsIno uint64) *OptionsReader {
	return &OptionsReader{MinRescan: 100 * time.Millisecond, netns: netnsIno, where: map[uint64]ProcSocket{}}
}

// Options reads the options of the socket with this inode from a process
// that holds it; ok is false when no process in the namespace holds it (any
// more) or reading failed (see Err).
func (r *OptionsReader) Options(inode uint64) (_ Options, ok bool) {
	if inode == 0 {
		return Options{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rescanned := false
	for {
		ps, found := r.where[inode]
		if !found {
			if rescanned || !r.rescanLocked() {
				return Options{}, false
			}
			rescanned = true
			continue
		}
		o, err := ReadOptions(ps.PID, ps.FD)
		if err == nil && o.Inode == inode {
			return o, true
		}
		delete(r.where, inode)
		if err != nil && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.EBADF) {
			r.err = err
			return Options{}, false
		}
		if rescanned {
			return Options{}, false
		}
		// The process exited or the descriptor now names another file:
		// look again at once, maybe another process holds the socket.
		r.last = time.Time{}
	}
}

// rescanLocked refreshes where, unless it did so less than MinRescan ago.
func (r *OptionsReader) rescanLocked() bool {
	if now := time.Now(); now.Sub(r.last) >= r.MinRescan {
		r.last = now
	} else {
		return false
	}
	socks, err := FindSockets(r.netns)
	if err != nil {
		r.err = err
		return false
	}
	clear(r.where)
	for _, ps := range socks {
		if _, dup := r.where[ps.Inode]; !dup {
			r.where[ps.Inode] = ps
		}
	}
	return true
}

// Holder returns the process (and descriptor) where inode was last found.
func (r *OptionsReader) Holder(inode uint64) (ProcSocket, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps, ok := r.where[inode]
	return ps, ok
}

// Err returns the last failure to scan /proc or read options, other than
// the socket not being found: e.g. the EPERM of a process the caller may
// not ptrace.
func (r *OptionsReader) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
