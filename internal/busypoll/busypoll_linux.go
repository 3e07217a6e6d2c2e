//go:build linux

package busypoll

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// parkFallback bounds how long the spinner stays parked for an event
// that no Touch follows (an event for a descriptor off the data path).
const parkFallback = 200 * time.Microsecond

// spinner is the running busy poller (Start).
type spinner struct {
	window int64 // nanoseconds after the last Touch to keep polling
	epfd   int   // the Go runtime's epoll descriptor
	epoch  time.Time
	last   atomic.Int64 // the last Touch, nanoseconds since epoch
	idle   atomic.Bool  // parked, waiting for a kick
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	stats  Stats
}

var (
	startMu sync.Mutex
	refs    int // Starts not yet stopped
	active  atomic.Pointer[spinner]
)

// Start starts the process's busy poller: for window after each Touch the
// thread running goroutines polls instead of sleeping. The poller is one
// per process (it watches the runtime's one network poller): a Start
// while it runs shares it, with the first Start's window, and it ends
// with the last stop. It fails when the runtime's epoll descriptor cannot
// be found. A window of 0 or less starts nothing.
func Start(window time.Duration) (stop func(), err error) {
	if window <= 0 {
		return func() {}, nil
	}
	startMu.Lock()
	defer startMu.Unlock()
	if refs == 0 {
		epfd, err := runtimeEpoll()
		if err != nil {
			return nil, err
		}
		s := &spinner{window: int64(window), epfd: epfd, epoch: time.Now(), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
		s.last.Store(-int64(window))
		active.Store(s)
		go s.run()
	}
	refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			startMu.Lock()
			defer startMu.Unlock()
			if refs--; refs > 0 {
				return
			}
			s := active.Swap(nil)
			close(s.stop)
			<-s.done
		})
	}, nil
}

// Window returns the running poller's window, 0 when none runs.
func Window() time.Duration {
	if s := active.Load(); s != nil {
		return time.Duration(s.window)
	}
	return 0
}

// smallRead is the largest read that counts as an exchange's (Touch).
const smallRead = 2048

// Touch marks a read of n bytes on the data path: a small one (a request,
// a reply, an ACK) keeps the poller polling for its window after it. A
// larger one is bulk data, where the thread has work queued anyway and
// polling would only take CPU from the kernel's side of the transfer.
// Without a running poller it is one atomic load.
func Touch(n int) {
	s := active.Load()
	if s == nil || n > smallRead {
		return
	}
	s.last.Store(int64(time.Since(s.epoch)))
	if s.idle.Load() && s.idle.CompareAndSwap(true, false) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Counters returns the running poller's counters (nil when none runs).
func Counters() *Stats {
	if s := active.Load(); s != nil {
		return &s.stats
	}
	return nil
}

func (s *spinner) recent() bool {
	return int64(time.Since(s.epoch))-s.last.Load() < s.window
}

func (s *spinner) run() {
	defer close(s.done)
	fallback := time.NewTimer(time.Hour)
	fallback.Stop()
	defer fallback.Stop()
	// park waits for a kick. A timed park is the short one that lets the
	// scheduler poll the network; it ends after parkFallback at the
	// latest. (Since Go 1.23 a stopped timer delivers nothing stale.)
	park := func(timed bool) bool {
		s.idle.Store(true)
		var expired <-chan time.Time
		if timed {
			fallback.Reset(parkFallback)
			expired = fallback.C
		}
		defer fallback.Stop()
		select {
		case <-s.kick:
		case <-expired:
		case <-s.stop:
			return false
		}
		s.idle.Store(false)
		return true
	}
	for {
		// Idle: sleep until traffic. idle is set before recent is read,
		// and Touch stores last before it reads idle, so a Touch is
		// never missed.
		s.idle.Store(true)
		if !s.recent() {
			if !park(false) {
				return
			}
		}
		s.idle.Store(false)
		s.stats.Windows.Add(1)
		for s.recent() {
			select {
			case <-s.stop:
				return
			default:
			}
			s.stats.Polls.Add(1)
			if s.eventPending() {
				s.stats.Parks.Add(1)
				if !park(true) {
					return
				}
				continue
			}
			// Another thread runnable on this CPU (the client or the
			// upstream, woken by the peer's last write) runs first.
			unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			runtime.Gosched()
		}
	}
}

// eventPending reports whether the runtime's epoll descriptor holds an
// event its network poller has not yet taken.
func (s *spinner) eventPending() bool {
	fds := [1]unix.PollFd{{Fd: int32(s.epfd), Events: unix.POLLIN}}
	var ts unix.Timespec
	n, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return errno == 0 && n > 0
}

// runtimeEpoll finds the Go runtime's epoll descriptor: the eventpoll
// whose interest list holds a pipe just opened (os.Pipe registers with
// the runtime's poller).
func runtimeEpoll() (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("busypoll: %w", err)
	}
	defer w.Close()
	defer r.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("busypoll: %w", err)
	}
	var pipeFD int
	if err := rc.Control(func(fd uintptr) { pipeFD = int(fd) }); err != nil {
		return 0, fmt.Errorf("busypoll: %w", err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("busypoll: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "tfd:" && f[1] == strconv.Itoa(pipeFD) {
				return fd, nil
			}
		}
	}
	return 0, errors.New("busypoll: the Go runtime's epoll descriptor was not found in /proc/self/fd")
}
