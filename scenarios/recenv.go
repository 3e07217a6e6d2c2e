package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/unplug-dev/unplug/stack"
	"github.com/unplug-dev/unplug/stack/fault"
)

// recordingEnv wraps an environment so that everything a scenario does —
// connects, sends, receives, fault rules, sysctls, waits, peer actions —
// lands in the recorder's timeline. Environments therefore record nothing
// themselves except packets (through the recorder as fault Observer).
type recordingEnv struct {
	runEnv
	rec   *recorder
	nconn int
	last  *recordingConn // the latest connection, for its TCP_INFO
}

// Dial implements Env, recording the attempt and its result.
func (e *recordingEnv) Dial(ctx context.Context, port uint16, opts SockOpts) (envConn, error) {
	e.nconn++
	id := e.nconn
	e.rec.Event(EventConnect, id, "connect to port %d%s", port, describeOpts(opts))
	start := e.runEnv.Now()
	c, err := e.runEnv.Dial(ctx, port, opts)
	took := e.runEnv.Now() - start
	if err != nil {
		e.rec.Call(EventConnect, id, 0, 0, took, err)
		return nil, err
	}
	if opts.NoWaitAccept {
		e.rec.Event(EventConnect, id, "connected after %s", fmtDur(took))
	} else {
		e.rec.Event(EventAccepted, id, "connected; the peer accepted the connection (%s)", fmtDur(took))
	}
	rc := &recordingConn{envConn: c, rec: e.rec, id: id, now: e.runEnv.Now}
	e.last = rc
	return rc, nil
}

// snapshotClient records the latest open connection's RTT and RTO before
// the first fault rule goes in, or when the scenario sets its anchor if
// that comes first: the state the precise theory starts from.
func (e *recordingEnv) snapshotClient() {
	c := e.last
	if c == nil || c.closed || e.rec.hasClientInfo() {
		return
	}
	info := c.envConn.Info()
	if info.State != "ESTABLISHED" || info.RTO <= 0 {
		return
	}
	ci := ClientInfo{T: e.runEnv.Now(), RTT: info.RTT, RTO: info.RTO}
	if e.runEnv.Kernel() {
		ci.HZ, ci.HZFrom = hostHZFrom()
	}
	if sb, ok := c.envConn.(sendBufferer); ok {
		if s, ok := sb.sendBuffer(); ok {
			ci.SndBuf, ci.MSS = s.SndBuf, s.MSS
		}
	}
	e.rec.setClientInfo(ci)
}

// describeOpts lists the socket options a Dial sets.
func describeOpts(o SockOpts) string {
	var parts []string
	if o.UserTimeout > 0 {
		parts = append(parts, "TCP_USER_TIMEOUT "+o.UserTimeout.String())
	}
	if o.KeepIdle > 0 {
		parts = append(parts, fmt.Sprintf("keepalive %s/%s/%d", o.KeepIdle, o.KeepIntvl, o.KeepCnt))
	}
	if o.SndBuf > 0 {
		parts = append(parts, fmt.Sprintf("SO_SNDBUF %d", o.SndBuf))
	}
	if o.RcvBuf > 0 {
		parts = append(parts, fmt.Sprintf("SO_RCVBUF %d", o.RcvBuf))
	}
	if o.ConnectTimeout > 0 {
		parts = append(parts, "connect timeout "+o.ConnectTimeout.String())
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// AddFault implements Env, recording the rule's window.
func (e *recordingEnv) AddFault(spec string) (int, error) {
	sp, err := fault.ParseSpec(spec)
	if err != nil {
		return 0, err
	}
	e.snapshotClient()
	id, err := e.runEnv.AddFault(sp.String())
	if err != nil {
		return 0, err
	}
	e.rec.faultAdded(id, sp)
	return id, nil
}

// RemoveFault implements Env.
func (e *recordingEnv) RemoveFault(id int) error {
	if err := e.runEnv.RemoveFault(id); err != nil {
		return err
	}
	e.rec.faultRemoved(id)
	return nil
}

// SetSysctl implements Env.
func (e *recordingEnv) SetSysctl(name, value string) error {
	if err := e.runEnv.SetSysctl(name, value); err != nil {
		return fmt.Errorf("set %s=%s in the private namespace: %w", name, value, err)
	}
	if e.runEnv.Kernel() {
		e.rec.Event(EventSysctl, 0, "%s = %s (in the private namespace)", name, value)
	} else {
		opt := map[string]string{
			"net.ipv4.tcp_retries2":    "TCPMaxRetriesOption",
			"net.ipv4.tcp_syn_retries": "TCPSynRetriesOption",
			"net.ipv4.tcp_rto_min_us":  "TCPMinRTOOption",
		}[name]
		if opt == "" {
			opt = "option"
		}
		e.rec.Event(EventSysctl, 0, "%s = %s (the gVisor client's %s: no kernel, no namespace)", name, value, opt)
	}
	return nil
}

// Sleep implements Env.
func (e *recordingEnv) Sleep(ctx context.Context, d time.Duration) error {
	e.rec.Event(EventWait, 0, "wait %s", d)
	return e.runEnv.Sleep(ctx, d)
}

// Note implements Env.
func (e *recordingEnv) Note(kind, format string, args ...any) {
	e.rec.Event(kind, 0, format, args...)
}

// Peer implements Env.
func (e *recordingEnv) Peer() PeerControl { return recordingPeer{e.runEnv.Peer(), e.rec} }

// recordingPeer records the peer actions a scenario takes.
type recordingPeer struct {
	PeerControl
	rec *recorder
}

// Forget implements PeerControl.
func (p recordingPeer) Forget() (int, error) {
	n, err := p.PeerControl.Forget()
	if err != nil {
		return n, err
	}
	p.rec.Event(EventPeer, 0, "the peer forgets %d connection(s): aborted, their RSTs dropped", n)
	return n, nil
}

// SetUserTimeout implements PeerControl.
func (p recordingPeer) SetUserTimeout(port uint16, d time.Duration) (int, error) {
	n, err := p.PeerControl.SetUserTimeout(port, d)
	if err != nil {
		return n, err
	}
	p.rec.Event(EventPeer, 0, "the peer sets TCP_USER_TIMEOUT %s on %d connection(s) on port %d", d, n, port)
	return n, nil
}

// Conns implements PeerControl.
func (p recordingPeer) Conns(port uint16) []stack.ConnStatus { return p.PeerControl.Conns(port) }

// recordingConn records every call on a client connection.
type recordingConn struct {
	envConn
	rec    *recorder
	id     int
	now    func() time.Duration
	closed bool
}

// Write implements Conn.
func (c *recordingConn) Write(p []byte) (int, error) {
	start := c.now()
	n, err := c.envConn.Write(p)
	c.rec.Call(EventSend, c.id, n, len(p), c.now()-start, err)
	return n, err
}

// Read implements Conn.
func (c *recordingConn) Read(p []byte) (int, error) {
	start := c.now()
	n, err := c.envConn.Read(p)
	c.rec.Call(EventRecv, c.id, n, len(p), c.now()-start, err)
	return n, err
}

// readUntil implements untilReader when the connection underneath does,
// recording the call like Read (a stop records nothing: the scenario notes
// what it waited for); errors.ErrUnsupported when it does not.
func (c *recordingConn) readUntil(p []byte, stop func() bool) (int, bool, error) {
	ur, ok := c.envConn.(untilReader)
	if !ok {
		return 0, false, errors.ErrUnsupported
	}
	start := c.now()
	n, stopped, err := ur.readUntil(p, stop)
	if !stopped {
		c.rec.Call(EventRecv, c.id, n, len(p), c.now()-start, err)
	}
	return n, stopped, err
}

// Close implements Conn; closing twice records once.
func (c *recordingConn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	err := c.envConn.Close()
	c.rec.Event(EventClose, c.id, "close")
	return err
}
