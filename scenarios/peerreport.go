package scenarios

import (
	"os"
	"path/filepath"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// PeerRecorder keeps the evidence `unplug report` shows for a running
// serve: it observes every packet the peer's fault layer sees, follows
// each TCP connection, and records the fault rules as they are added and
// removed. Unlike exec it has only the peer's side: the clients' sockets
// live in other programs' namespaces, so there is no kernel view (except
// for clients in serve's own namespace, see WatchKernel) and the settings
// are the sysctl defaults of unplug's own namespace. Memory grows
// with the number of
// connections; the timeline lists at most MaxTimelinePackets packets.
type PeerRecorder struct {
	rec     *recorder
	tracker *connTracker
	kern    peerKernel
}

// NewPeerRecorder starts recording on clock (the peer's).
func NewPeerRecorder(clock tcpip.Clock) *PeerRecorder {
	rec := newRecorder()
	rec.begin(clock)
	p := &PeerRecorder{rec: rec, tracker: newConnTracker(rec)}
	p.tracker.onNew = p.rescanKernel
	return p
}

// Close stops the kernel view's sampling (see WatchKernel).
func (p *PeerRecorder) Close() { p.stopKernel() }

// Observe implements fault.Observer.
func (p *PeerRecorder) Observe(ev *fault.Event) { p.tracker.Observe(ev) }

// FaultAdded records rule id, installed now.
func (p *PeerRecorder) FaultAdded(id int, sp fault.Spec) { p.rec.faultAdded(id, sp) }

// FaultRemoved records that rule id was removed now.
func (p *PeerRecorder) FaultRemoved(id int) { p.rec.faultRemoved(id) }

// Report builds the report of every connection seen so far, with the
// gates in expects evaluated; forwards name what is behind forwarded
// ports.
func (p *PeerRecorder) Report(expects []ExecExpect, forwards []services.Forward) *Report {
	rep := &Report{
		Scenario: "serve", Description: "connections seen by unplug serve (the peer's side of the link)",
		Clock: "real", Client: "kernel", Wall: Wall{Start: p.rec.start},
	}
	p.rec.fill(rep)
	rep.Wall.Duration = rep.Duration
	rep.AnchorLabel = "serve starts"
	info := &ExecInfo{KernelView: "none: serve sees only the packets; the clients' sockets are in their own programs' namespaces (use unplug exec --report for the kernel's view)"}
	var defaults TimeoutSettings
	info.Sysctls, defaults = readSysctls(hostSysctl, "sysctl defaults of unplug's namespace")
	fw := map[uint16]string{}
	for _, f := range forwards {
		fw[f.Port] = f.Target
	}
	kernel, view := p.kernelConns()
	if view != "" {
		info.KernelView = view
	}
	info.Conns = p.tracker.buildConns(rep.Duration, 0, "", kernel, defaults, describeUpstream(fw, false))
	rep.Exec = info
	rep.Outcome = "running"
	rep.OutcomeAt = rep.Duration
	rep.OutcomeDetail = strings.TrimPrefix(execSummary(info), "the program exited with 0; ")
	rep.evaluateExec(expects)
	return rep
}

// hostSysctl reads a sysctl of unplug's own network namespace.
func hostSysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/")))
	return strings.TrimSpace(string(b)), err
}
