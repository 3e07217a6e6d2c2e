// Package sockdiag reads the kernel's view of a program's TCP sockets from
// outside the program: what `ss -tieo` shows (state, timer, retransmits,
// backoff, RTO, queues, struct tcp_info) through a NETLINK_SOCK_DIAG
// socket, and the timeout-relevant socket options (SO_KEEPALIVE,
// TCP_KEEPIDLE/INTVL/CNT, TCP_USER_TIMEOUT) through pidfd_getfd and
// getsockopt on a duplicate of the program's descriptor.
//
// Typical use, with a tun.Namespace ns whose programs are watched:
//
//	nl, _ := ns.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG)
//	tr := sockdiag.NewTracker(sockdiag.NewDumper(nl)) // or Dumper.Dump
//	ino, _ := sockdiag.NetnsInode(ns.PID())
//	s := sockdiag.NewSampler(tr.Dump, sockdiag.NewOptionsReader(ino).Options, 20*time.Millisecond)
//	go s.Run(ctx)
//	... run the program, inject faults (call tr.Rescan when the peer accepts) ...
//	for _, c := range s.Conns() { ... c.Samples, c.Events(), c.LastOptions() ... }
//	sys, _ := sockdiag.ReadTCPSysctls(ns.Sysctl)
//
// The netlink socket must be created inside the namespace of interest
// (sock_diag answers for the namespace the socket lives in), which is why
// Dump takes the socket rather than creating one.
//
// Everything here needs Linux; on other systems the functions return an
// error saying so.
package sockdiag
