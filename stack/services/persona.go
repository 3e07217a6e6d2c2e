package services

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/unplug-dev/unplug/internal/packet"
	"github.com/unplug-dev/unplug/internal/units"
	"github.com/unplug-dev/unplug/stack/fault"
)

// Persona names: how the whole peer misbehaves, beyond what one fault rule
// says.
const (
	// PersonaSilent accepts connections, then never answers: after the
	// handshake the peer sends nothing, not even ACKs, so the client's
	// data is retransmitted until its timers give up.
	PersonaSilent = "silent"
	// PersonaReboot forgets every connection at one moment, as a host that
	// restarted: the next segment of each old connection gets a RST, new
	// connections work.
	PersonaReboot = "reboot"
	// PersonaHalfOpen forgets every connection at one moment without
	// telling anyone, as a crashed host behind a firewall that drops what
	// it does not know: old connections become black holes (half-open on
	// the client's side), new connections work.
	PersonaHalfOpen = "half-open"
	// PersonaSlowReader reads each connection at a fixed number of bytes
	// per second, so the peer's receive window shrinks and the client's
	// writes block.
	PersonaSlowReader = "slow-reader"
)

// Persona is a peer behaviour chosen with serve's --persona NAME[:ARG]. The
// zero Persona is the ordinary peer.
type Persona struct {
	Name string        // "" or one of the Persona* names
	Port uint16        // silent: only connections to this port; 0 = all
	At   time.Duration // reboot, half-open: when, counted from Start
	Rate int64         // slow-reader: bytes per second read from each connection
}

const personaUsage = "use silent[:PORT], reboot:AFTER, half-open:AFTER or slow-reader:BYTES_PER_SECOND (e.g. reboot:30s, slow-reader:1000)"

// ParsePersona parses NAME[:ARG] as serve's --persona flag takes it.
func ParsePersona(s string) (Persona, error) {
	name, arg, hasArg := strings.Cut(s, ":")
	p := Persona{Name: name}
	bad := func(why string) (Persona, error) {
		return Persona{}, fmt.Errorf("persona %q: %s; %s", s, why, personaUsage)
	}
	switch name {
	case PersonaSilent:
		if hasArg {
			n, err := strconv.ParseUint(arg, 10, 16)
			if err != nil || n == 0 {
				return bad("the port must be 1-65535")
			}
			p.Port = uint16(n)
		}
	case PersonaReboot, PersonaHalfOpen:
		d, err := time.ParseDuration(arg)
		if !hasArg || err != nil || d <= 0 {
			return bad("it needs the moment it strikes, a positive duration after start")
		}
		p.At = d
	case PersonaSlowReader:
		n, err := parseRate(arg)
		if !hasArg || err != nil {
			return bad("it needs a read rate in bytes per second, a positive integer with an optional k or M (×1000), KiB or MiB (×1024)")
		}
		p.Rate = n
	default:
		return bad("unknown persona")
	}
	return p, nil
}

// maxRate bounds a slow-reader rate: 1 TiB/s is no longer slow.
const maxRate = 1 << 40

// parseRate parses a positive byte rate with an optional unit, as package
// units reads sizes (k, M decimal; KiB, MiB binary).
func parseRate(s string) (int64, error) {
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n <= 0 || n > maxRate {
		return 0, errors.New("bad rate")
	}
	return n, nil
}

// String returns the persona as ParsePersona reads it ("" for none).
func (p Persona) String() string {
	switch p.Name {
	case PersonaSilent:
		if p.Port != 0 {
			return p.Name + ":" + strconv.Itoa(int(p.Port))
		}
	case PersonaReboot, PersonaHalfOpen:
		return p.Name + ":" + p.At.String()
	case PersonaSlowReader:
		return p.Name + ":" + strconv.FormatInt(p.Rate, 10)
	}
	return p.Name
}

// Rules returns the fault rules the persona installs when it starts.
func (p Persona) Rules() []fault.Spec {
	if p.Name != PersonaSilent {
		return nil
	}
	// Everything the peer sends once the client completed the handshake.
	return []fault.Spec{{Action: fault.ActDrop, Dir: packet.Out, Port: p.Port, AfterEstablished: true}}
}

// strikeRules are the rules reboot and half-open install at their moment,
// for the connections open then.
func (p Persona) strikeRules() []fault.Spec {
	switch p.Name {
	case PersonaReboot:
		// The old connections' segments get a RST from "the rebooted
		// host"; what the forgotten endpoints send (their aborts' RSTs)
		// never leaves.
		return []fault.Spec{
			{Action: fault.ActDrop, Dir: packet.Out, Flows: fault.FlowsExisting},
			{Action: fault.ActReject, Dir: packet.In, Flows: fault.FlowsExisting},
		}
	case PersonaHalfOpen:
		return []fault.Spec{{Action: fault.ActDrop, Dir: packet.Both, Flows: fault.FlowsExisting}}
	}
	return nil
}

// Apply starts the persona's stack-level part on the peer stack s with the
// fault rules ctl: silent's rules at once; reboot's and half-open's strike
// at p.At on ctl's clock (so in virtual time on the virtual-time pair). It
// returns a function that cancels a strike not yet fired. Slow-reader's
// part is in how the services read (ReadPacer). Apply is used by Start and
// by the virtual-time tests.
func (p Persona) Apply(s *stack.Stack, ctl *fault.Controller) (stop func(), err error) {
	if p.Name == "" || p.Name == PersonaSlowReader {
		return func() {}, nil
	}
	if ctl == nil {
		return nil, fmt.Errorf("persona %s needs the peer's fault layer; none was configured", p.Name)
	}
	for _, sp := range p.Rules() {
		ctl.Add(sp)
	}
	if p.At == 0 {
		return func() {}, nil
	}
	t := ctl.Clock().AfterFunc(p.At, func() { p.Strike(s, ctl) })
	return func() { t.Stop() }, nil
}

// Strike makes a reboot or half-open persona strike now: it installs the
// rules for the connections open at this moment, then forgets them. It
// returns how many connections were forgotten.
func (p Persona) Strike(s *stack.Stack, ctl *fault.Controller) int {
	rules := p.strikeRules()
	if rules == nil {
		return 0
	}
	for _, sp := range rules {
		ctl.Add(sp)
	}
	return Forget(s)
}

// Forget aborts every TCP connection of s, listeners excepted, as a host
// that lost its state: their RSTs go out unless a fault rule stops them.
// It returns how many it aborted.
func Forget(s *stack.Stack) int {
	n := 0
	for _, te := range s.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		switch tcp.EndpointState(ep.State()) {
		case tcp.StateListen, tcp.StateClose, tcp.StateError, tcp.StateInitial, tcp.StateBound:
			continue
		}
		ep.Abort()
		n++
	}
	return n
}

// ReadPacer paces a reader to Rate bytes per second on whatever clock the
// caller reads: the services use it with wall time, the virtual-time tests
// with virtual time. Each Allow grants at most a tenth of a second's worth,
// so the reader takes small, regular bites. The zero value is unusable;
// set Rate.
type ReadPacer struct {
	Rate int64         // bytes per second
	next time.Duration // when the next byte may be read
}

// Allow returns how many bytes (at most want) may be read at now, or 0 and
// how long to wait. Report what was read with Took.
func (r *ReadPacer) Allow(now time.Duration, want int) (n int, wait time.Duration) {
	if now < r.next {
		return 0, r.next - now
	}
	return int(min(int64(want), max(r.Rate/10, 1))), 0
}

// Took accounts for n bytes read at now.
func (r *ReadPacer) Took(now time.Duration, n int) {
	r.next = max(r.next, now) + time.Duration(int64(n)*int64(time.Second)/r.Rate)
}

// personaState is a running persona in a Set.
type personaState struct {
	rate  int64 // slow-reader
	start time.Time
	stop  func()
}

// startPersona applies cfg.Persona to the stack the services run on.
func startPersona(s *stack.Stack, cfg Config) (personaState, error) {
	st := personaState{rate: cfg.Persona.Rate, start: time.Now(), stop: func() {}}
	stop, err := cfg.Persona.Apply(s, cfg.Faults)
	if err != nil {
		return st, err
	}
	st.stop = stop
	return st, nil
}

// pacer returns a reader pacer for one connection, nil without slow-reader.
func (st *personaState) pacer(done <-chan struct{}) *connPacer {
	if st.rate == 0 {
		return nil
	}
	return &connPacer{p: ReadPacer{Rate: st.rate}, start: st.start, done: done}
}

// connPacer paces one connection's reads in wall time.
type connPacer struct {
	mu    sync.Mutex
	p     ReadPacer
	start time.Time
	done  <-chan struct{}
}

// limit waits until buf may be read from and returns it cut to the
// allowance; it returns early, with buf cut to one byte, when the Set closes.
func (c *connPacer) limit(buf []byte) []byte {
	for {
		c.mu.Lock()
		n, wait := c.p.Allow(time.Since(c.start), len(buf))
		c.mu.Unlock()
		if wait == 0 {
			return buf[:n]
		}
		t := time.NewTimer(wait)
		select {
		case <-c.done:
			t.Stop()
			return buf[:min(len(buf), 1)]
		case <-t.C:
		}
	}
}

// took accounts for n bytes read.
func (c *connPacer) took(n int) {
	c.mu.Lock()
	c.p.Took(time.Since(c.start), n)
	c.mu.Unlock()
}
