package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
)

// fakePeer is a fault controller without a netstack: what HandlePeer needs.
type fakePeer struct{ ctl *fault.Controller }

func (p fakePeer) Controller() *fault.Controller { return p.ctl }
func (p fakePeer) Status() stack.Status {
	return stack.Status{Rules: p.ctl.Status(), TCP: map[string]uint64{"retransmits": 7}}
}

// TestClient drives every typed call against HandlePeer's operations.
func TestClient(t *testing.T) {
	peer := fakePeer{fault.NewController(faketime.NewManualClock(), 1)}
	srv := NewServer()
	HandlePeer(srv, peer)
	path := sockPath(t)
	if err := srv.Listen(path); err != nil {
		t.Fatal(err)
	}
	serve(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := Client{Path: path}

	ids, err := c.AddFault(ctx, "drop dir=in port=80", "delay 100ms")
	if err != nil || len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("AddFault = %v, %v; want two ids", ids, err)
	}
	// All or nothing: one bad spec installs none.
	var re *RemoteError
	if _, err := c.AddFault(ctx, "drop", "explode"); !errors.As(err, &re) || !strings.Contains(err.Error(), `"explode"`) {
		t.Fatalf("AddFault with a bad spec = %v, want a RemoteError naming it", err)
	}
	rules, err := c.Faults(ctx)
	if err != nil || len(rules) != 2 || rules[0].ID != ids[0] || rules[0].Spec != "drop dir=in port=80" {
		t.Fatalf("Faults = %+v, %v; want the two rules added", rules, err)
	}
	st, err := c.Status(ctx)
	if err != nil || len(st.Rules) != 2 || st.TCP["retransmits"] != 7 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if err := c.RemoveFault(ctx, ids[0]); err != nil {
		t.Fatalf("RemoveFault(%d) = %v", ids[0], err)
	}
	if err := c.RemoveFault(ctx, ids[0]); !errors.As(err, &re) {
		t.Fatalf("RemoveFault of a removed rule = %v, want a RemoteError", err)
	}
	if n, err := c.ClearFaults(ctx); err != nil || n != 1 {
		t.Fatalf("ClearFaults = %d, %v; want 1 rule removed", n, err)
	}
	if rules, err := c.Faults(ctx); err != nil || len(rules) != 0 {
		t.Fatalf("Faults after ClearFaults = %+v, %v", rules, err)
	}
}
