package bench

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
)

// upstreamsEnv marks a re-execution of this binary as the forwarding
// rows' upstream servers (RunUpstreamsIfRequested).
const upstreamsEnv = "UNPLUG_BENCH_UPSTREAMS"

// The forwarding rows' upstreams (discard, source, echo) run in a program
// of their own, as a user's server would: served from the measuring
// process, they shared one Go runtime with the client, and that process,
// not the forwarder under test, became what limited a fast forwarder
// (unplug's client → upstream rate fell from about 1.58 to 1.37 GB/s on
// two CPUs while toxiproxy's, limited by its own CPU, stayed at 0.96).
var upstreamServers = [3]func(net.Listener){serveDiscard, serveSource, serveEcho}

// RunUpstreamsIfRequested serves the forwarding rows' upstreams on the
// listening sockets it inherits (descriptors 3, 4, 5) and exits when its
// standard input closes, when this process is such a re-execution
// (startUpstreams); otherwise it returns at once. Programs that run the
// benchmark call it first thing in main, as tun.RunAgentIfRequested.
func RunUpstreamsIfRequested() {
	if os.Getenv(upstreamsEnv) != "1" {
		return
	}
	for i, serve := range upstreamServers {
		l, err := net.FileListener(os.NewFile(uintptr(3+i), "upstream"))
		if err != nil {
			fmt.Fprintf(os.Stderr, "unplug bench upstreams: descriptor %d: %v (%s=1 is only for the benchmark's own re-execution: unset it)\n", 3+i, err, upstreamsEnv)
			os.Exit(2)
		}
		go serve(l)
	}
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// startUpstreams re-executes this binary to serve ls (a socket keeps the
// namespace it was made in, so the child needs no namespace of its own)
// and returns a stop function that ends it and waits for it. The child
// also dies with this process (Pdeathsig) or when its stdin closes.
func startUpstreams(ls [3]net.Listener) (stop func(), err error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, l := range ls {
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			return nil, fmt.Errorf("upstream servers: %w", err)
		}
		files = append(files, f)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("upstream servers: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"unplug-bench-upstreams"},
		Env:         append(os.Environ(), upstreamsEnv+"=1"),
		Stdin:       r,
		Stderr:      os.Stderr,
		ExtraFiles:  files,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("upstream servers: start %s: %w", cmd.Path, err)
	}
	return func() {
		w.Close()
		cmd.Wait()
	}, nil
}
