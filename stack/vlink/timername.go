package vlink

import (
	"runtime"
	"strings"
	"unsafe"
)

// The closure gVisor's TCP endpoint wraps around each of its timer functions
// (connect.go: timerHandler(e, f) locks the endpoint, calls f and records its
// error) is named tcp.timerHandler.func1, or, where the compiler inlined
// timerHandler, after the caller: tcp.initSender.timerHandler.func3.
const (
	tcpPackage      = "gvisor.dev/gvisor/pkg/tcpip/transport/tcp."
	tcpTimerHandler = "timerHandler.func"
)

// TimerName returns the name of the function f runs, as the debugger and
// runtime know it, without the "-fm" suffix of method values: for example
// "gvisor.dev/gvisor/pkg/tcpip/transport/tcp.(*sender).retransmitTimerExpired".
//
// gVisor's TCP endpoint never hands the clock its timer methods directly: it
// arms tcp.timerHandler(e, f), a closure that takes the endpoint's lock and
// calls f. For that closure TimerName looks one level in: the closure's
// captured variables are the endpoint and f, so it reads both words after the
// code pointer and reports the one that is a method value. This depends on
// the closure's layout in the pinned gVisor version (a test checks that the
// retransmit timer still resolves); if the layout does not match, the
// closure's own name is returned.
func TimerName(f func()) string {
	if f == nil {
		return ""
	}
	// A func value is a pointer to a funcval: the code pointer followed by
	// the closure's captured variables.
	fv := *(*unsafe.Pointer)(unsafe.Pointer(&f))
	name := codeName(*(*uintptr)(fv))
	if strings.HasPrefix(name, tcpPackage) && strings.Contains(name, tcpTimerHandler) {
		for i := 1; i <= 2; i++ {
			captured := *(*unsafe.Pointer)(unsafe.Add(fv, i*int(unsafe.Sizeof(uintptr(0)))))
			if captured == nil {
				continue
			}
			// Each captured word is a pointer (the *Endpoint or the
			// func value); reading its first word is in bounds either
			// way, and only a method value's code pointer resolves to a
			// function name ending in -fm.
			if inner := codeName(*(*uintptr)(captured)); strings.HasSuffix(inner, "-fm") {
				name = inner
				break
			}
		}
	}
	return strings.TrimSuffix(name, "-fm")
}

// codeName names the function whose code starts at pc, or "" if none does.
func codeName(pc uintptr) string {
	fn := runtime.FuncForPC(pc)
	if fn == nil {
		return ""
	}
	return fn.Name()
}
