package vlink

import (
	"reflect"
	"runtime"
	"strings"
)

// tcpPackage prefixes the names of gVisor TCP's functions.
const tcpPackage = "gvisor.dev/gvisor/pkg/tcpip/transport/tcp."

// TimerName returns the name of the function f is, as the debugger and the
// runtime know it, without the "-fm" suffix of method values: for example
// "github.com/unplug-dev/unplug/internal/vlink.(*Link).deliver". It reads only
// the func value's code pointer (reflect), never the closure's memory.
func TimerName(f func()) string {
	if f == nil {
		return ""
	}
	fn := runtime.FuncForPC(reflect.ValueOf(f).Pointer())
	if fn == nil {
		return ""
	}
	return strings.TrimSuffix(fn.Name(), "-fm")
}

// tcpTimerArmers name gVisor TCP's timers by the function that arms one.
// The endpoint never hands the clock its timer methods: every timer's
// function is timerHandler(e, f) (connect.go), one closure for all of them,
// which takes the endpoint's lock and calls f. What tells the timers apart
// safely is where they are armed: tcp.(*timer).enable creates the clock's
// timer on its first call, and each function calling enable arms exactly
// one of the endpoint's timers (the resend, probe, cork, reorder and
// keepalive timers); newBackoffTimer creates the handshake's. Keys and
// values are relative to tcpPackage. TestTCPTimerArmers derives this table
// from the pinned gVisor's source and fails when it no longer matches.
var tcpTimerArmers = map[string]string{
	"(*sender).sendZeroWindowProbe":     "(*sender).retransmitTimerExpired",
	"(*sender).enableZeroWindowProbing": "(*sender).retransmitTimerExpired",
	"(*sender).postXmit":                "(*sender).retransmitTimerExpired",
	"(*sender).handleRcvdSegment":       "(*sender).retransmitTimerExpired",
	"(*sender).sendSegment":             "(*sender).retransmitTimerExpired",
	"(*sender).schedulePTO":             "(*sender).probeTimerExpired",
	"(*sender).maybeSendSegment":        "(*sender).corkTimerExpired",
	"(*Endpoint).Restore":               "(*sender).corkTimerExpired",
	"(*rackControl).detectLoss":         "(*rackControl).reorderTimerExpired",
	"(*Endpoint).resetKeepaliveTimer":   "(*Endpoint).keepaliveTimerExpired",
	"newBackoffTimer":                   "(*handshake).retransmitHandlerLocked",
}

// creationName names the timer f that the caller of Clock.AfterFunc is
// creating: TimerName(f), or, for one of gVisor TCP's timers, the method it
// runs, found from who is arming it on this goroutine's stack (see
// tcpTimerArmers). It falls back to TimerName when the stack shows no armer
// it knows.
func creationName(f func()) string {
	name := TimerName(f)
	if !strings.HasPrefix(name, tcpPackage) || !strings.Contains(name, "timerHandler") {
		return name
	}
	var pcs [24]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs[:])])
	enabling := false
	for {
		fr, more := frames.Next()
		fn, ok := strings.CutPrefix(fr.Function, tcpPackage)
		switch {
		case !ok:
		case fn == "(*timer).enable":
			enabling = true
		case fn == "(*timer).resetOrStart":
		case enabling || fn == "newBackoffTimer":
			if m, known := tcpTimerArmers[fn]; known {
				return tcpPackage + m
			}
			return name
		}
		if !more {
			return name
		}
	}
}
