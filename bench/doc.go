// Package bench measures unplug against the kernel it sits next to: bulk
// throughput into the peer with and without fault rules, request/response
// latency through its echo service, memory per idle connection, the time
// `serve` takes to accept, virtual-time speed, and iperf3 through a
// forward. Each figure is taken in the same run as its baseline (kernel
// loopback in the same namespace, or the peer without rules), so the
// ratios hold on a noisy machine where absolute numbers do not.
//
// Run creates its own network namespaces (tun.NewNamespace) and removes
// them; the process must call tun.RunAgentIfRequested first thing in main
// or TestMain. `unplug bench` is the command-line front end:
//
//	rep, err := bench.Run(ctx, bench.Options{Quick: true})
//	if err != nil { ... }
//	rep.WriteTable(os.Stdout)
package bench
