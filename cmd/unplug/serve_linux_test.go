package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unplug-dev/unplug/internal/capture"
	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/control"
)

// inNetns is set in the re-executed test binary that runs inside a private
// network namespace created by `unshare --net`.
const inNetns = "UNPLUG_TEST_IN_NETNS"

// requireNetns re-runs the calling test inside a fresh network namespace and
// returns false in the outer process, which only reports the inner result.
// Everything the test does (TUN, packets, sysctls) stays in that namespace,
// which disappears when the inner process exits.
func requireNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetns) == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1",
		fmt.Sprintf("-test.short=%t", testing.Short()))
	cmd.Env = append(os.Environ(), inNetns+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("in a private netns: %v\n%s", err, out)
	}
	t.Logf("in a private netns:\n%s", out)
	return false
}

// servePeer runs `unplug serve` in-process until the test ends.
type servePeer struct {
	control, pcap string
	out           syncBuffer
}

func startServe(t *testing.T, extra ...string) *servePeer {
	t.Helper()
	dir := t.TempDir()
	sp := &servePeer{control: filepath.Join(dir, "control.sock"), pcap: filepath.Join(dir, "serve.pcapng")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	exited := make(chan struct{})
	args := append([]string{"serve", "--control", sp.control, "--pcap", sp.pcap}, extra...)
	go func() { done <- run(ctx, args, &sp.out, &sp.out); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d:\n%s", code, sp.out.String())
		}
		if _, err := net.InterfaceByName("unplug0"); err == nil {
			t.Error("unplug0 still exists after serve stopped")
		}
	})
	for range 1000 {
		select {
		case <-exited:
			t.Fatalf("serve exited early:\n%s", sp.out.String())
		default:
		}
		if control.Call(ctx, sp.control, opStatus, nil, nil) == nil {
			return sp
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("serve did not come up:\n%s", sp.out.String())
	return sp
}

// cli runs an unplug subcommand against this serve and returns its exit code.
func (sp *servePeer) cli(t *testing.T, args ...string) int {
	var out bytes.Buffer
	code := run(context.Background(), append(append(args[:1:1], "--control", sp.control), args[1:]...), &out, &out)
	if code != 0 {
		t.Logf("unplug %s: %d %s", strings.Join(args, " "), code, out.String())
	}
	return code
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dial connects from the kernel to the peer, with TCP_USER_TIMEOUT so an
// outage ends in ETIMEDOUT within seconds.
func dial(t *testing.T, port string, userTimeout time.Duration) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			if userTimeout > 0 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
			}
		})
		return serr
	}}
	c, err := d.Dial("tcp", net.JoinHostPort("198.18.0.2", port))
	if err != nil {
		t.Fatalf("dial %s: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// status returns the serve's status, as `unplug status --json` prints it.
func (sp *servePeer) status(t *testing.T) stack.Status {
	t.Helper()
	var st stack.Status
	if err := control.Call(context.Background(), sp.control, opStatus, nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestServeBusyPollOff checks that --busy-poll 0 runs no poller.
func TestServeBusyPollOff(t *testing.T) {
	if !requireNetns(t) {
		return
	}
	sp := startServe(t, "--busy-poll", "0")
	if bp := sp.status(t).BusyPoll; bp != nil {
		t.Fatalf("busy poll status %+v with --busy-poll 0", bp)
	}
}

// waitAccepted waits until the peer holds c as an established connection,
// so an outage started next cannot swallow the handshake's final ACK
// (docs/facts.md).
func (sp *servePeer) waitAccepted(t *testing.T, c net.Conn) {
	t.Helper()
	local := c.LocalAddr().String()
	for range 500 {
		var st stack.Status
		if err := control.Call(context.Background(), sp.control, opStatus, nil, &st); err != nil {
			t.Fatal(err)
		}
		for _, conn := range st.Conns {
			if conn.Remote == local && conn.State == "ESTABLISHED" {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the peer never accepted %s", local)
}

const request = "GET /404 HTTP/1.0\r\n\r\n"

func TestServe(t *testing.T) {
	if !requireNetns(t) {
		return
	}
	sp := startServe(t)

	t.Run("get-404", func(t *testing.T) {
		c := dial(t, "80", 0)
		io.WriteString(c, request)
		body, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(body), "HTTP/1.0 404 File not found") {
			t.Fatalf("reply %q, %v", body, err)
		}
	})

	t.Run("drop-then-etimedout", func(t *testing.T) {
		c := dial(t, "80", 3*time.Second)
		sp.waitAccepted(t, c)
		if sp.cli(t, "fault", "add", "drop port=80") != 0 {
			t.Fatal("fault add failed")
		}
		defer sp.cli(t, "fault", "clear")
		io.WriteString(c, request)
		_, err := c.Read(make([]byte, 100))
		if !errors.Is(err, unix.ETIMEDOUT) {
			t.Fatalf("read: %v, want ETIMEDOUT", err)
		}
	})

	t.Run("brief-outage-recovers", func(t *testing.T) {
		c := dial(t, "80", 0)
		sp.waitAccepted(t, c)
		if sp.cli(t, "fault", "add", "drop for=1500ms") != 0 {
			t.Fatal("fault add failed")
		}
		io.WriteString(c, request)
		body, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(body), "HTTP/1.0 404") {
			t.Fatalf("after the outage: %q, %v", body, err)
		}
		sp.cli(t, "fault", "clear")
	})

	t.Run("idle-outage-unnoticed", func(t *testing.T) {
		c := dial(t, "7", 0)
		sp.waitAccepted(t, c)
		if sp.cli(t, "fault", "add", "drop port=7") != 0 {
			t.Fatal("fault add failed")
		}
		time.Sleep(1500 * time.Millisecond)
		sp.cli(t, "fault", "clear")
		io.WriteString(c, "ping")
		buf := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo after idle outage: %q, %v", buf, err)
		}
	})

	t.Run("sink-writer-blocks-then-fails", func(t *testing.T) {
		c := dial(t, "5001", 2*time.Second)
		sp.waitAccepted(t, c)
		if sp.cli(t, "fault", "add", "drop port=5001") != 0 {
			t.Fatal("fault add failed")
		}
		defer sp.cli(t, "fault", "clear")
		chunk := make([]byte, 16<<10)
		var errs []error
		var total int
		for len(errs) < 2 {
			n, err := c.Write(chunk)
			total += n
			if err != nil {
				errs = append(errs, err)
			}
			if total > 64<<20 {
				t.Fatal("writes never blocked")
			}
		}
		if !errors.Is(errs[0], unix.ETIMEDOUT) || !errors.Is(errs[1], unix.EPIPE) {
			t.Fatalf("write errors %v, want ETIMEDOUT then EPIPE", errs)
		}
	})

	// Round trips from the kernel through the TUN keep the busy poller
	// (on by default) polling, and it parked for their events: the
	// request and reply paths reached the runtime's network poller.
	t.Run("busy-poll", func(t *testing.T) {
		c := dial(t, "7", 0)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		b := []byte("x")
		for range 200 {
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, b); err != nil {
				t.Fatal(err)
			}
		}
		bp := sp.status(t).BusyPoll
		if bp == nil || bp.Window != defaultBusyPoll || bp.Windows == 0 || bp.Polls == 0 || bp.Parks == 0 {
			t.Fatalf("busy poll status %+v after 200 round trips, want the default window and windows, polls, parks > 0", bp)
		}
	})

	// Stop serve (flushes the capture), then read the capture back.
	t.Run("capture", func(t *testing.T) {
		if sp.cli(t, "status") != 0 {
			t.Fatal("status failed")
		}
	})
}

// TestServeCapture checks the pcapng after shutdown: drops are kept with a
// comment naming the rule, and the retransmissions of a request sent into a
// dead link have doubling intervals.
func TestServeCapture(t *testing.T) {
	if !requireNetns(t) {
		return
	}
	pcap := filepath.Join(t.TempDir(), "kept.pcapng")
	t.Run("serve", func(t *testing.T) {
		startServe(t, "--fault", "drop dir=in port=80 flags=data", "--pcap", pcap)
		c := dial(t, "80", 3*time.Second)
		io.WriteString(c, request)
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, unix.ETIMEDOUT) {
			t.Fatalf("read: %v, want ETIMEDOUT", err)
		}
	})
	recs, err := capture.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for _, rec := range recs {
		var p packet.Packet
		if packet.Parse(rec.Dir, rec.Data, &p) != nil || p.Dir != packet.In || p.PayloadLen == 0 {
			continue
		}
		if !strings.Contains(rec.Comment, "dropped by rule 1") {
			t.Errorf("dropped data segment without rule comment: %q", rec.Comment)
		}
		times = append(times, rec.Time)
	}
	if len(times) < 4 {
		t.Fatalf("only %d transmissions of the request in the capture", len(times))
	}
	// Intervals grow roughly by 2x (the first retransmission may be a tail
	// loss probe at the same interval as the second).
	var prev time.Duration
	for i := 2; i < len(times); i++ {
		iv := times[i].Sub(times[i-1])
		if prev > 0 {
			if r := float64(iv) / float64(prev); r < 1.5 || r > 2.6 {
				t.Errorf("interval %d is %v after %v: ratio %.2f, want ≈2", i, iv, prev, r)
			}
		}
		prev = iv
	}
	if path, err := exec.LookPath("tshark"); err == nil {
		out, err := exec.Command(path, "-r", pcap, "-Y", "frame.comment", "-T", "fields", "-e", "frame.comment").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dropped by rule 1") {
			t.Errorf("tshark does not show the drop comments: %v\n%s", err, out)
		}
	}
}
