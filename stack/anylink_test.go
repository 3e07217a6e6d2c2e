package stack

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/unplug-dev/unplug/internal/netaddr"
	"github.com/unplug-dev/unplug/internal/netstack"
	"github.com/unplug-dev/unplug/internal/vlink"
	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
	"github.com/unplug-dev/unplug/tun"
)

// TestPeerOnAnyLink runs the one peer (New: fault layer, peer TCP,
// services) on a link that is not a TUN device: vlink's in-process link on
// the real clock, with a gVisor client stack on its other end. An echo goes
// through and every packet crossed the fault layer; a rule installed in
// Options drops the client's packets to another port.
func TestPeerOnAnyLink(t *testing.T) {
	clock := tcpip.NewStdClock()
	clientEnd, peerEnd := vlink.NewLink(clock, 0, 0)
	client, err := netstack.New(clock, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); client.Wait() })
	if terr := client.CreateNIC(1, clientEnd); terr != nil {
		t.Fatalf("client NIC: %s", terr)
	}
	if err := netstack.AddAddress(client, 1, netaddr.Host4); err != nil {
		t.Fatal(err)
	}
	sp, err := fault.ParseSpec("drop port=9")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := New(context.Background(), Options{
		Link: peerEnd, Clock: clock, NoIPv6: true, Faults: []fault.Spec{sp},
		Services: services.Config{Echo: 7, Discard: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := peer.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, client, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(DefaultAddr4.As4()), Port: 7}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("dial the echo service over the vlink link: %v", err)
	}
	defer c.Close()
	msg := []byte("one peer on any link")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, %v; want %q", got, err, msg)
	}
	st := peer.Fault.Stats()
	if st.In.Load() == 0 || st.Out.Load() == 0 {
		t.Errorf("fault layer saw %d in, %d out: the link's packets must cross it", st.In.Load(), st.Out.Load())
	}
	if vs := peerEnd.Stats(); vs.Received == 0 || vs.Sent == 0 {
		t.Errorf("vlink peer end: %+v, want packets both ways", vs)
	}
	// The rule from Options: a SYN to the discard port is dropped, so the
	// dial cannot complete before its deadline.
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	if c9, err := gonet.DialContextTCP(dctx, client, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(DefaultAddr4.As4()), Port: 9}, ipv4.ProtocolNumber); err == nil {
		c9.Close()
		t.Fatal("dial port 9 succeeded through drop port=9")
	}
	if st := peer.Controller().Status(); len(st) != 1 || st[0].Dropped == 0 {
		t.Errorf("rule status %+v, want the drop rule with drops", st)
	}
}

// TestPeerNeedsOneLink: Options must name exactly one of Link and Device,
// and New closes what it was given when it refuses.
func TestPeerNeedsOneLink(t *testing.T) {
	dev, other := tun.NewMemoryPair(1500)
	defer other.Close()
	link := channel.New(1, 1500, "")
	tests := []struct {
		name string
		opts Options
	}{
		{"none", Options{}},
		{"both", Options{Link: link, Device: dev}},
	}
	for _, tt := range tests {
		_, err := New(context.Background(), tt.opts)
		if err == nil || !strings.Contains(err.Error(), "exactly one of Link") {
			t.Errorf("%s: New error = %v, want the one-line Link/Device error", tt.name, err)
		}
	}
	if _, err := dev.Write([]byte{0x45}); err == nil {
		t.Error("the refused device is still open")
	}
}

// TestPeerCloseOnVirtualClock: on a clock other than the real one, Close
// does not wait for FIN exchanges in wall time (they cannot progress until
// the clock's owner moves it). vlink's clock has no Advance method, which
// is what New used to look for.
func TestPeerCloseOnVirtualClock(t *testing.T) {
	clock := vlink.NewClock()
	_, peerEnd := vlink.NewLink(clock, 0, 0)
	peer, err := New(context.Background(), Options{Link: peerEnd, Clock: clock, NoIPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	if peer.realTime {
		t.Fatal("a peer on vlink's clock counts as real time: Close would wait in wall time")
	}
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
}
