package sockdiag

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// TCPSysctls are the namespace's TCP timeout settings that decide what a
// socket without options of its own does when the network goes silent
// (net.ipv4.tcp_*, per network namespace; they apply to IPv6 too).
type TCPSysctls struct {
	Retries1, Retries2 int // tcp_retries1, tcp_retries2
	SynRetries         int // tcp_syn_retries
	SynAckRetries      int // tcp_synack_retries
	OrphanRetries      int // tcp_orphan_retries (0 means 8)
	KeepaliveTime      time.Duration
	KeepaliveIntvl     time.Duration
	KeepaliveProbes    int
	FinTimeout         time.Duration // tcp_fin_timeout
	SynLinearTimeouts  int           // tcp_syn_linear_timeouts (Linux 6.5+); -1 if absent
	RTOMin             time.Duration // tcp_rto_min_us (Linux 6.x); 0 if absent
	RTOMax             time.Duration // tcp_rto_max_ms (Linux 6.15+); 0 if absent
}

// ReadTCPSysctls reads TCPSysctls with get, which returns a sysctl's value
// by dotted name: pass tun.Namespace.Sysctl to read a private namespace's.
// Settings that older kernels lack are left as documented on the fields.
func ReadTCPSysctls(get func(name string) (string, error)) (TCPSysctls, error) {
	var t TCPSysctls
	var errs []error
	num := func(name string, optional bool) (int, bool) {
		v, err := get("net.ipv4." + name)
		if err != nil {
			if !optional {
				errs = append(errs, err)
			}
			return 0, false
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("sysctl net.ipv4.%s=%q: not a number", name, v))
			return 0, false
		}
		return n, true
	}
	t.Retries1, _ = num("tcp_retries1", false)
	t.Retries2, _ = num("tcp_retries2", false)
	t.SynRetries, _ = num("tcp_syn_retries", false)
	t.SynAckRetries, _ = num("tcp_synack_retries", false)
	t.OrphanRetries, _ = num("tcp_orphan_retries", false)
	n, _ := num("tcp_keepalive_time", false)
	t.KeepaliveTime = time.Duration(n) * time.Second
	n, _ = num("tcp_keepalive_intvl", false)
	t.KeepaliveIntvl = time.Duration(n) * time.Second
	t.KeepaliveProbes, _ = num("tcp_keepalive_probes", false)
	n, _ = num("tcp_fin_timeout", false)
	t.FinTimeout = time.Duration(n) * time.Second
	var ok bool
	if t.SynLinearTimeouts, ok = num("tcp_syn_linear_timeouts", true); !ok {
		t.SynLinearTimeouts = -1
	}
	n, _ = num("tcp_rto_min_us", true)
	t.RTOMin = time.Duration(n) * time.Microsecond
	n, _ = num("tcp_rto_max_ms", true)
	t.RTOMax = time.Duration(n) * time.Millisecond
	return t, errors.Join(errs...)
}
