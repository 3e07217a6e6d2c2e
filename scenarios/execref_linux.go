package scenarios

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/internal/netns"
	"github.com/unplug-dev/unplug/stack/fault"
)

// ExecIn runs o.Argv in lab's client namespace — not behind unplug's
// peer — and returns its exit code and, with o.Report, the same report
// Exec makes: the connections from the packets lab shows (the recorder
// and connection tracker Exec uses), the kernel's view from sock_diag in
// that namespace, the endings, the theory. o.Faults are only described in
// the report (the lab applies its own translation of them); o.Sysctls
// must already be set in the lab; o.Forwards and o.Transparent are not
// supported. Signals, Grace and Timeout work as in Exec. Stdin, if nil,
// is /dev/null.
func ExecIn(ctx context.Context, o ExecOptions, lab ExecLab) (ExecResult, error) {
	if len(o.Forwards) > 0 || o.Transparent {
		return ExecResult{}, errors.New("the reference lab has no forwards and no transparent routing")
	}
	rec := newRecorder()
	rec.begin(tcpip.NewStdClock())
	kv := startKernelViewNetns(lab.Netns(), o.SampleInterval)
	defer kv.stop()
	tracker := newConnTracker(rec)
	tracker.onNew = kv.rescan
	for i, sp := range o.Faults {
		rec.faultAdded(i+1, sp)
	}
	var obs fault.Observer = tracker
	if o.Observer != nil {
		obs = fault.Join(tracker, o.Observer)
	}
	if err := lab.Begin(obs, time.Now()); err != nil {
		lab.End()
		return ExecResult{}, err
	}
	prog, err := startInNetns(lab.Netns(), o)
	if err != nil {
		lab.End()
		return ExecResult{Code: 127}, err
	}
	stopped := supervise(ctx, prog, o)
	code := prog.code()
	exited := rec.Now()
	res := ExecResult{Code: code}
	if o.Report {
		// As in Exec: the program's closing FINs and RSTs cross, the
		// sampler sees the sockets go.
		time.Sleep(max(4*kv.interval, 200*time.Millisecond))
	}
	kv.stop()
	endErr := lab.End()
	if o.Report {
		res.Report = buildExecReport(rec, tracker, kv, lab.Sysctl, o, code, exited, stopped)
	}
	if endErr != nil {
		return res, endErr
	}
	return res, ctx.Err()
}

// startKernelViewNetns is startKernelView for a named namespace: the
// sock_diag socket is made on a thread inside it.
func startKernelViewNetns(nsName string, interval time.Duration) *kernelView {
	kv := newKernelView(interval)
	path := netns.Named(nsName)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return kv.none(fmt.Errorf("namespace %s: %w", nsName, err))
	}
	fd := -1
	err := netns.Do(path, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	})
	if err != nil {
		return kv.none(fmt.Errorf("sock_diag socket: %w", err))
	}
	return kv.start(os.NewFile(uintptr(fd), "sock_diag"), st.Ino, 0)
}

// netnsProgram is a program started with `ip netns exec`, which enters
// the namespace and then execs it: the process is the program.
type netnsProgram struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func startInNetns(netns string, o ExecOptions) (*netnsProgram, error) {
	argv := append([]string{"netns", "exec", netns}, o.Argv...)
	cmd := exec.Command("ip", argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in the reference namespace: %w", o.Argv[0], err)
	}
	p := &netnsProgram{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *netnsProgram) Done() <-chan struct{} { return p.done }

func (p *netnsProgram) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.cmd.Process.Signal(sig)
}

func (p *netnsProgram) Kill() { p.cmd.Process.Kill() }

// code is the exit code as a shell gives it (128+N for signal N); it
// waits for the exit.
func (p *netnsProgram) code() int {
	<-p.done
	st := p.cmd.ProcessState
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}
