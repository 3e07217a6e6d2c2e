package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/unplug-dev/unplug/stack/services"
)

// Scenario is one experiment: parameters with defaults that finish in
// seconds, a client written as straight-line blocking code against Env,
// and a theory computed from the parameters.
type Scenario struct {
	// Name is what `unplug run NAME` takes.
	Name string
	// Summary says in one line what the scenario shows.
	Summary string
	// Params are the scenario's parameters, in the order reports list
	// them; ParseParams validates values against them.
	Params []Param
	// Kernel means the behaviour shown is the host kernel's, so the
	// scenario only runs on the real clock.
	Kernel bool
	// Streams means data keeps flowing as fast as the link allows; on the
	// virtual clock such a scenario needs a link delay (zero delay is
	// infinite bandwidth: a never-ending source would send forever at one
	// instant), so it gets DefaultStreamDelay unless --link-delay is set.
	Streams bool
	// Run is the client: it acts through env, adds measurements to r, and
	// records the outcome with r.Outcome. It returns an error only when
	// the experiment could not be carried out; what the network did to the
	// application is the outcome, not an error.
	Run func(ctx context.Context, env runEnv, p Params, r *recorder) error
	// Expect is the theory for p, for a kernel client or a gVisor one,
	// before the run (nominal conditions).
	Expect func(p Params, kernel bool) Theory
	// Precise, when set, is the theory Run evaluates the report against:
	// computed after the run from the client's measured RTT and RTO, the
	// kernel's HZ and the link (see Conditions). Expect is then Precise on
	// nominal conditions.
	Precise func(p Params, c Conditions) Theory
}

// nominal turns a precise theory into an Expect.
func nominal(f func(Params, Conditions) Theory) func(Params, bool) Theory {
	return func(p Params, kernel bool) Theory { return f(p, nominalConditions(kernel)) }
}

// DefaultStreamDelay is the virtual link's one-way delay for scenarios that
// stream data when none is given.
const DefaultStreamDelay = 10 * time.Millisecond

// Catalog returns every scenario, in the order `unplug scenarios` lists
// them.
func Catalog() []Scenario {
	return []Scenario{
		timeoutScenario(),
		briefOutageScenario(),
		sendbufFullScenario(),
		idleOutageScenario(),
		keepaliveScenario(),
		synTimeoutScenario(),
		halfOpenScenario(),
		zeroWindowScenario(),
		peerRetransmitScenario(),
		lossScenario(),
	}
}

// Lookup returns the scenario called name.
func Lookup(name string) (Scenario, bool) {
	for _, sc := range Catalog() {
		if sc.Name == name {
			return sc, true
		}
	}
	return Scenario{}, false
}

// Names returns the scenario names in catalog order.
func Names() []string {
	var out []string
	for _, sc := range Catalog() {
		out = append(out, sc.Name)
	}
	return out
}

// Ports of the peer's services the scenarios use.
const (
	portHTTP   = services.DefaultHTTPPort
	portEcho   = services.DefaultEchoPort
	portSink   = services.DefaultSinkPort
	portSource = services.DefaultSourcePort
)

// request404 is the seed's request.
var request404 = []byte("GET /404 HTTP/1.0\r\n\r\n")

// settle is how long a scenario waits beyond an outage's end before it acts
// again, so the rule has surely expired.
const settle = 100 * time.Millisecond

// outcomeOf turns the error of a socket call into the scenario's outcome
// when it is an errno (what the network did to the application) and
// returns nil; any other error (context cancelled, broken environment,
// unexpected end of file) is returned as the scenario's failure.
func outcomeOf(ctx context.Context, r *recorder, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	name := ErrnoName(err)
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%s: the peer closed the connection unexpectedly", op)
	case name == "" || isDeadline(err):
		return fmt.Errorf("%s: %w", op, err)
	}
	r.Outcome(name, "%s failed with %s %s after %s", op, name, seconds(r.Now()-r.anchorTime()), r.anchorName())
	return nil
}

// readAll reads c until end of file; first is when the first byte arrived
// (-1 if none).
func readAll(env runEnv, c envConn) (data []byte, first time.Duration, err error) {
	buf := make([]byte, 64<<10)
	first = -1
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if first < 0 {
				first = env.Now()
			}
			data = append(data, buf[:n]...)
		}
		if errors.Is(err, io.EOF) {
			return data, first, nil
		}
		if err != nil {
			return data, first, err
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
