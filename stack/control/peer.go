package control

import (
	"context"
	"fmt"
	"strconv"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
)

// The operations a running unplug serve answers, as they go on the wire.
const (
	OpFaultAdd    = "fault.add"   // args: fault specs; data: []int, the new rule ids
	OpFaultList   = "fault.list"  // data: []fault.RuleStatus
	OpFaultRemove = "fault.rm"    // args: rule ids
	OpFaultClear  = "fault.clear" // data: int, how many rules were removed
	OpStatus      = "status"      // data: stack.Status
)

// Peer is what the operations act on; *stack.Peer is one.
type Peer interface {
	Controller() *fault.Controller
	Status() stack.Status
}

// HandlePeer registers every Op* operation on srv, acting on p.
func HandlePeer(srv *Server, p Peer) {
	ctl := p.Controller()
	srv.Handle(OpFaultAdd, func(_ context.Context, args []string) (any, error) {
		for _, a := range args { // all or nothing
			if _, err := fault.ParseSpec(a); err != nil {
				return nil, err
			}
		}
		ids := make([]int, 0, len(args))
		for _, a := range args {
			id, _ := ctl.AddString(a)
			ids = append(ids, id)
		}
		return ids, nil
	})
	srv.Handle(OpFaultList, func(context.Context, []string) (any, error) {
		return ctl.Status(), nil
	})
	srv.Handle(OpFaultRemove, func(_ context.Context, args []string) (any, error) {
		for _, a := range args {
			id, err := strconv.Atoi(a)
			if err != nil {
				return nil, fmt.Errorf("rule id %q is not a number; the ids are the first column of the fault list", a)
			}
			if err := ctl.Remove(id); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	srv.Handle(OpFaultClear, func(context.Context, []string) (any, error) {
		return ctl.Clear(), nil
	})
	srv.Handle(OpStatus, func(context.Context, []string) (any, error) {
		return p.Status(), nil
	})
}

// Client calls the operations of the unplug serve listening on Path, with
// typed arguments and results. The zero Client uses DefaultPath. Every
// method is bounded by its ctx only; pass one with a deadline.
type Client struct {
	// Path is the control socket; "" means DefaultPath().
	Path string
}

func (c Client) path() string {
	if c.Path == "" {
		return DefaultPath()
	}
	return c.Path
}

// AddFault installs the fault rules (fault.ParseSpec's grammar) and returns
// their ids, in order. The server checks every spec before installing any:
// on an error none is installed.
func (c Client) AddFault(ctx context.Context, specs ...string) ([]int, error) {
	var ids []int
	if err := Call(ctx, c.path(), OpFaultAdd, specs, &ids); err != nil {
		return nil, err
	}
	if len(ids) != len(specs) {
		return ids, fmt.Errorf("%s: server returned %d rule ids for %d specs", OpFaultAdd, len(ids), len(specs))
	}
	return ids, nil
}

// RemoveFault removes the rules with the given ids, stopping at the first
// that does not exist.
func (c Client) RemoveFault(ctx context.Context, ids ...int) error {
	args := make([]string, len(ids))
	for i, id := range ids {
		args[i] = strconv.Itoa(id)
	}
	return Call(ctx, c.path(), OpFaultRemove, args, nil)
}

// ClearFaults removes every rule and returns how many there were.
func (c Client) ClearFaults(ctx context.Context) (int, error) {
	var n int
	err := Call(ctx, c.path(), OpFaultClear, nil, &n)
	return n, err
}

// Faults returns the installed rules with their counters.
func (c Client) Faults(ctx context.Context) ([]fault.RuleStatus, error) {
	var rules []fault.RuleStatus
	err := Call(ctx, c.path(), OpFaultList, nil, &rules)
	return rules, err
}

// Status returns the peer's connections, rules and packet counters.
func (c Client) Status(ctx context.Context) (stack.Status, error) {
	var st stack.Status
	err := Call(ctx, c.path(), OpStatus, nil, &st)
	return st, err
}
