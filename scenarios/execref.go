package scenarios

import (
	"time"

	"github.com/unplug-dev/unplug/stack/fault"
)

// ExecLab is a network that is not unplug's, in which ExecIn runs a
// program and reports on it with the same code as Exec: the iptables
// reference of `unplug exec --reference` (internal/reference), two
// kernel namespaces on a veth pair with the fault rules made of iptables
// rules. The lab owns the packets' fate; ExecIn owns the program and the
// report.
type ExecLab interface {
	// Netns is the client namespace's name (ip netns): the program runs
	// there and its sockets are sampled there.
	Netns() string
	// Sysctl reads a sysctl inside the client namespace.
	Sysctl(name string) (string, error)
	// Begin starts showing obs every packet on the client's link, in
	// order, with its fate (Decision) and the wall-clock time it crossed
	// (start is the report's origin), and starts the fault schedule: the
	// rules that start at once are in place when Begin returns, and
	// after= and for= count from then, when the program starts.
	Begin(obs fault.Observer, start time.Time) error
	// End stops the schedule (removing every rule still in place) and the
	// packets; the error says what went wrong on the way, if anything.
	End() error
}
