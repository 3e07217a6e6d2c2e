package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/refs"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// safetyTimeout bounds waits that should end long before it; it guards
// against hangs and is never what a test asserts on.
const safetyTimeout = 30 * time.Second

// parseSpecs parses rules, failing tb on the first that does not parse.
func parseSpecs(tb testing.TB, rules ...string) []fault.Spec {
	tb.Helper()
	var specs []fault.Spec
	for _, r := range rules {
		sp, err := fault.ParseSpec(r)
		if err != nil {
			tb.Fatal(err)
		}
		specs = append(specs, sp)
	}
	return specs
}

// startPeer builds a peer that the test's cleanup closes, reporting an
// error from Close.
func startPeer(t *testing.T, opts Options) *Peer {
	t.Helper()
	peer, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := peer.Close(); err != nil {
			t.Errorf("peer.Close: %v", err)
		}
	})
	return peer
}

// newPeerPair builds the peer on one end of an in-memory link, with the
// echo and discard services and the given rules, and a second netstack on
// the other end as the client at 198.18.0.1 (built with New too, without
// services, so both ends use the same link code). Cleanup closes both and
// checks that no gVisor object is still referenced.
func newPeerPair(t *testing.T, rules ...string) (peer, client *Peer) {
	t.Helper()
	ctx := context.Background()
	a, b := tun.NewPair(1500)
	specs := parseSpecs(t, rules...)
	peer, err := New(ctx, Options{Device: a, Seed: 1, Faults: specs, Services: services.Config{Echo: 7, Discard: 9}})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	client, err = New(ctx, Options{Device: b, Addr4: hostAddr4, Addr6: hostAddr6})
	if err != nil {
		peer.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := client.Close(); err != nil {
			t.Errorf("client.Close: %v", err)
		}
		if err := peer.Close(); err != nil {
			t.Errorf("peer.Close: %v", err)
		}
		if t.Failed() {
			return
		}
		if p := peer.Fault.Pending(); p != 0 {
			t.Errorf("%d delayed packets still held after Close", p)
		}
		refs.DoRepeatedLeakCheck() // panics, naming what is still referenced
	})
	return peer, client
}

// dialPeer connects the client stack to the peer's port over IPv4; opt, if
// set, configures the endpoint before connect (e.g. a user timeout).
func dialPeer(t *testing.T, client *Peer, port uint16, opt func(tcpip.Endpoint)) *gonet.TCPConn {
	t.Helper()
	var wq waiter.Queue
	ep, terr := client.Stack.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		t.Fatalf("new endpoint: %s", terr)
	}
	if opt != nil {
		opt(ep)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	addr := tcpip.FullAddress{Addr: tcpipAddr(DefaultAddr4), Port: port}
	if terr := ep.Connect(addr); terr != nil {
		if _, ok := terr.(*tcpip.ErrConnectStarted); !ok {
			ep.Close()
			t.Fatalf("connect: %s", terr)
		}
		select {
		case <-notify:
		case <-time.After(safetyTimeout):
			ep.Close()
			t.Fatal("connect never completed")
		}
		if terr := ep.LastError(); terr != nil {
			ep.Close()
			t.Fatalf("connect: %s", terr)
		}
	}
	c := gonet.NewTCPConn(&wq, ep)
	t.Cleanup(func() { c.Close() })
	return c
}

// echoBytes sends n random bytes through the echo service on c, half
// closes, and checks that exactly the same bytes come back.
func echoBytes(t *testing.T, c *gonet.TCPConn, n int, seed uint64) {
	t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(data)
	c.SetDeadline(time.Now().Add(safetyTimeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if rerr != nil {
		t.Fatalf("read after %d bytes: %v", len(got), rerr)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes (sha256 %x), sent %d (sha256 %x)", len(got), sha256.Sum256(got), n, sha256.Sum256(data))
	}
}

// TestPeerThroughRules exchanges data between an in-process gVisor client
// and the peer over an in-memory link while rules drop, lose or delay
// packets, and checks what reaches the application (everything, in order)
// and what the rules counted. Cleanup closes both stacks with goroutine
// and reference leak checks.
func TestPeerThroughRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []string
		size  int
		check func(t *testing.T, peer, client *Peer)
	}{
		{"no rules", nil, 256 << 10, func(t *testing.T, peer, client *Peer) {
			if st := peer.Status().Link; st.Dropped != 0 || st.Delayed != 0 || st.In == 0 || st.Out == 0 {
				t.Errorf("link %+v, want traffic and no drops or delays", st)
			}
		}},
		{"loss both ways", []string{"loss 5%"}, 128 << 10, func(t *testing.T, peer, client *Peer) {
			st := peer.Status()
			if st.Link.Dropped == 0 {
				t.Error("nothing was lost")
			}
			if st.TCP["retransmits"]+client.Stack.Stats().TCP.Retransmits.Value() == 0 {
				t.Error("lost segments were never retransmitted")
			}
		}},
		{"delay with jitter reorders", []string{"delay 2ms jitter=8ms"}, 256 << 10, func(t *testing.T, peer, client *Peer) {
			st := peer.Status().Link
			if st.Delayed == 0 || st.Delayed != st.In+st.Out {
				t.Errorf("delayed %d of %d packets, want all", st.Delayed, st.In+st.Out)
			}
		}},
		{"loss towards the peer, delay back", []string{"loss 5% dir=in", "delay 1ms dir=out"}, 128 << 10, func(t *testing.T, peer, client *Peer) {
			r := peer.Controller().Status()
			if r[0].Dropped == 0 || r[1].Delayed == 0 {
				t.Errorf("rules %+v: want drops by 1 and delays by 2", r)
			}
		}},
		{"first SYN dropped", []string{"drop flags=syn count=1"}, 1 << 10, func(t *testing.T, peer, client *Peer) {
			r := peer.Controller().Status()[0]
			// The echo went through, so the resent SYN did.
			if r.Dropped != 1 || r.State != "expired" {
				t.Errorf("rule %+v: want one SYN dropped, then expired", r)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, client := newPeerPair(t, tc.rules...)
			c := dialPeer(t, client, 7, nil)
			echoBytes(t, c, tc.size, 1)
			c.Close()
			tc.check(t, peer, client)
		})
	}
}

// TestPeerLossRecoveryStress is the heavier loss case, 10 % each way and
// 256 KiB echoed, opt-in with UNPLUG_STRESS=1: between two peers it often
// takes longer than safetyTimeout. With RACK off (netstack.ConfigurePeer),
// gVisor's sender recovers every loss after the first RTO by another RTO:
// an RTO sets its NewReno "recover" point (FastRecovery.Last) to SndNxt, and
// with another loss in nearly every window the duplicate ACKs never pass it,
// so fast retransmit stays off (fast_retransmits 0, 18 timeouts, RTO 4.6 s
// measured on the memory link). Measured 2026-12-02: 4 of 6 runs over 30 s;
// at 5 % and 128 KiB (TestPeerThroughRules) 6 of 6 in 0.9 s. Later the same
// day 5 of 5 passed in 5-16 s and 1 of 4 took over 30 s with the loss
// rule's old segment table (which a single connection never overflows):
// run-to-run spread of the RTO chains, not a fix, so it stays opt-in.
func TestPeerLossRecoveryStress(t *testing.T) {
	if os.Getenv("UNPLUG_STRESS") == "" {
		t.Skip("opt-in: UNPLUG_STRESS=1 (known slow recovery of the RACK-off peer under heavy loss)")
	}
	peer, client := newPeerPair(t, "loss 10%")
	c := dialPeer(t, client, 7, nil)
	echoBytes(t, c, 256<<10, 1)
	c.Close()
	if st := peer.Status(); st.Link.Dropped == 0 {
		t.Error("nothing was lost")
	}
}

// TestPeerOutageTimesOut: once every packet to the echo port is dropped,
// a client with a short user timeout gives up with a timeout, and the
// rule counted the drops.
func TestPeerOutageTimesOut(t *testing.T) {
	peer, client := newPeerPair(t)
	c := dialPeer(t, client, 7, func(ep tcpip.Endpoint) {
		ut := tcpip.TCPUserTimeoutOption(300 * time.Millisecond)
		ep.SetSockOpt(&ut)
	})
	echoBytes(t, dialPeer(t, client, 7, nil), 100, 2) // the link works
	if _, err := peer.Controller().AddString("drop port=7"); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(safetyTimeout))
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, err := c.Read(make([]byte, 4))
	var nerr interface{ Timeout() bool }
	if err == nil || (errors.As(err, &nerr) && nerr.Timeout()) {
		t.Fatalf("read = %v, want the connection to time out (not the deadline)", err)
	}
	if n := client.Stack.Stats().TCP.EstablishedTimedout.Value(); n != 1 {
		t.Errorf("client EstablishedTimedout = %d, want 1 (read error %v)", n, err)
	}
	if r := peer.Controller().Status()[0]; r.Dropped == 0 {
		t.Errorf("rule %+v dropped nothing", r)
	}
}

// TestPeerIPv6ExtensionHeaders: a SYN behind IPv6 extension headers is
// classified by port (the drop rule for port 7 matches it) and otherwise
// answered.
func TestPeerIPv6ExtensionHeaders(t *testing.T) {
	a, b := tun.NewMemoryPair(1500)
	defer b.Close()
	sp, _ := fault.ParseSpec("drop port=7 dir=in")
	peer, err := New(context.Background(), Options{Device: a, Faults: []fault.Spec{sp}, Services: services.Config{Echo: 7, Discard: 9}})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	stop := time.AfterFunc(safetyTimeout, func() { b.Close() }) // unblocks Read
	defer stop.Stop()
	b.Write(tcp6WithExtensions(7))
	b.Write(tcp6WithExtensions(9))
	buf := make([]byte, 1500)
	for {
		n, err := b.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		p := buf[:n]
		if header.IPVersion(p) != header.IPv6Version || header.IPv6(p).NextHeader() != uint8(header.TCPProtocolNumber) {
			continue // neighbour discovery and the like
		}
		seg := header.TCP(header.IPv6(p).Payload())
		if seg.SourcePort() == 7 {
			t.Fatal("the SYN to port 7 was answered although the rule drops it")
		}
		if seg.SourcePort() == 9 && seg.Flags() == header.TCPFlagSyn|header.TCPFlagAck {
			break
		}
	}
	if r := peer.Controller().Status()[0]; r.Dropped != 1 {
		t.Errorf("rule %+v, want exactly the SYN to port 7 dropped", r)
	}
}
