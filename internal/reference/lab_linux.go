package reference

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/netns"
	"github.com/unplug-dev/unplug/stack/services"
)

// Addresses of the two ends of the veth pair (198.18.0.0/15, benchmarking
// space; each end lives in a namespace of its own).
var (
	ClientAddr = netip.MustParseAddr("198.19.0.1")
	ServerAddr = netip.MustParseAddr("198.19.0.2")
)

// The veth ends' names inside their namespaces.
const (
	clientIf = "cli0"
	serverIf = "srv0"
)

// sysctls the client namespace gets at creation, as unplug's run namespace
// does (scenarios/realenv_linux.go): no IPv6 chatter on the link.
var baseSysctls = map[string]string{
	"net.ipv6.conf.default.disable_ipv6": "1",
	"net.ipv6.conf.all.disable_ipv6":     "1",
}

// scenarioSysctls are the per-namespace sysctls any scenario may set; Run
// puts each back to the namespace's value at creation after every run.
var scenarioSysctls = []string{"net.ipv4.tcp_retries2", "net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts"}

// Lab is the reference setup: two network namespaces (client and server)
// on a veth pair and a TCP server in the server's. Runs reuse it; the TCP
// metrics cache is flushed between them. Close removes everything.
type Lab struct {
	// Client and Server are the namespaces' names (ip netns).
	Client, Server string
	// Iptables is the iptables binary used inside the server namespace.
	Iptables string

	defaults  map[string]string // scenarioSysctls at creation
	closeOnce sync.Once
}

// Available returns nil when a Lab can be built here: root, the ip and
// iptables commands. The error says what is missing.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("the reference needs root (network namespaces, veth, iptables)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the reference needs `ip` from iproute2")
	}
	if _, err := iptablesBinary(); err != nil {
		return err
	}
	return nil
}

// iptablesBinary prefers the nft backend, which works in a fresh namespace
// without kernel modules for the legacy tables.
func iptablesBinary() (string, error) {
	for _, name := range []string{"iptables-nft", "iptables", "iptables-legacy"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("the reference needs iptables (apt-get install iptables)")
}

// NewLab creates the namespaces PREFIX-cli-RAND and PREFIX-srv-RAND, the
// veth pair and its addresses. On error nothing is left behind.
func NewLab(ctx context.Context, prefix string) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	ipt, _ := iptablesBinary()
	var rb [3]byte
	rand.Read(rb[:])
	tag := hex.EncodeToString(rb[:])
	l := &Lab{Client: prefix + "-cli-" + tag, Server: prefix + "-srv-" + tag, Iptables: ipt, defaults: map[string]string{}}
	if err := l.setup(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) setup(ctx context.Context) error {
	if err := run(ctx, "ip", "netns", "add", l.Client); err != nil {
		return err
	}
	if err := run(ctx, "ip", "netns", "add", l.Server); err != nil {
		return err
	}
	for _, ns := range []string{l.Client, l.Server} {
		for k, v := range baseSysctls {
			if err := l.setSysctl(ns, k, v); err != nil {
				return err
			}
		}
	}
	steps := [][]string{
		{"ip", "-n", l.Client, "link", "add", clientIf, "type", "veth", "peer", "name", serverIf, "netns", l.Server},
		{"ip", "-n", l.Client, "addr", "add", ClientAddr.String() + "/30", "dev", clientIf},
		{"ip", "-n", l.Server, "addr", "add", ServerAddr.String() + "/30", "dev", serverIf},
		{"ip", "-n", l.Client, "link", "set", "lo", "up"},
		{"ip", "-n", l.Server, "link", "set", "lo", "up"},
		{"ip", "-n", l.Client, "link", "set", clientIf, "up"},
		{"ip", "-n", l.Server, "link", "set", serverIf, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, k := range scenarioSysctls {
		v, err := l.sysctl(l.Client, k)
		if err != nil {
			if k == "net.ipv4.tcp_syn_linear_timeouts" {
				continue // older kernels
			}
			return err
		}
		l.defaults[k] = v
	}
	// Refuse to run with a rule left over (there cannot be one in a
	// fresh namespace; this checks that iptables works in it at all).
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.Server, l.Iptables, "-S", "INPUT").CombinedOutput(); err != nil {
		return fmt.Errorf("iptables in the server namespace: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Close deletes both namespaces (the veth pair and every socket in them go
// with them). It is idempotent.
func (l *Lab) Close() error {
	var err error
	l.closeOnce.Do(func() {
		ctx := context.Background()
		for _, ns := range []string{l.Client, l.Server} {
			if _, statErr := os.Stat("/run/netns/" + ns); statErr != nil {
				continue
			}
			if e := run(ctx, "ip", "netns", "del", ns); e != nil && err == nil {
				err = e
			}
		}
	})
	return err
}

// run runs a command and turns a failure into one error with its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// inNetns runs fn on an OS thread inside the named namespace.
func inNetns(ns string, fn func() error) error { return netns.Do(netns.Named(ns), fn) }

// sysctlPath maps net.ipv4.tcp_retries2 to its /proc/sys file.
func sysctlPath(name string) string { return "/proc/sys/" + strings.ReplaceAll(name, ".", "/") }

// setSysctl writes a sysctl inside namespace ns (/proc/sys/net follows the
// writer's namespace).
func (l *Lab) setSysctl(ns, name, value string) error {
	return inNetns(ns, func() error {
		if err := os.WriteFile(sysctlPath(name), []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", name, value, ns, err)
		}
		return nil
	})
}

// sysctl reads a sysctl inside namespace ns.
func (l *Lab) sysctl(ns, name string) (string, error) {
	var v string
	err := inNetns(ns, func() error {
		b, err := os.ReadFile(sysctlPath(name))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// socket creates a TCP socket in namespace ns; blocking unless nonblock.
func socket(ns string, nonblock bool) (int, error) {
	fd := -1
	err := inNetns(ns, func() error {
		typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
		if nonblock {
			typ |= unix.SOCK_NONBLOCK
		}
		var err error
		fd, err = unix.Socket(unix.AF_INET, typ, 0)
		return err
	})
	return fd, err
}

// drop installs (add) or removes the seed's rule in the server namespace.
func (l *Lab) drop(ctx context.Context, add bool) error {
	op := "-A"
	if !add {
		op = "-D"
	}
	return run(ctx, "ip", "netns", "exec", l.Server, l.Iptables, op, "INPUT", "-p", "tcp",
		"--dport", fmt.Sprint(ServerPort), "-j", "DROP")
}

// server is the reference's TCP server on ServerPort: HTTP answers like the
// peer's http service (the seed's SimpleHTTP 404), or, as a sink, accepts
// and never reads.
type server struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

// startServer listens on ServerAddr:ServerPort in the server namespace.
func (l *Lab) startServer(sink bool) (*server, error) {
	fd, err := socket(l.Server, true)
	if err != nil {
		return nil, fmt.Errorf("server socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: ServerPort, Addr: ServerAddr.As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("server bind: %w", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("server listen: %w", err)
	}
	f := os.NewFile(uintptr(fd), "reference-server")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("server listener: %w", err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.accepted.Add(1)
			if sink {
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serveHTTP(c)
			}()
		}
	}()
	return s, nil
}

// serveHTTP answers one request as the peer's http service does.
func serveHTTP(c net.Conn) {
	defer c.Close()
	var buf []byte
	b := make([]byte, 4096)
	for {
		n, err := c.Read(b)
		buf = append(buf, b[:n]...)
		if resp, ok := services.HTTPResponse(buf); ok {
			c.Write(resp)
			return
		}
		if err != nil {
			return
		}
	}
}

// waitAccepted waits until the server accepted more than before.
func (s *server) waitAccepted(ctx context.Context, before int64) error {
	deadline := time.Now().Add(10 * time.Second)
	for s.accepted.Load() <= before {
		if time.Now().After(deadline) {
			return errors.New("the reference server did not accept the connection within 10 s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func (s *server) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
