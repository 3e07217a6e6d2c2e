// Package scenarios packages the experiments unplug runs — a request sent
// into a dead link, a writer filling its send buffer, a brief outage, an idle
// connection with and without keepalive, a connect into an outage, a peer
// that forgets the connection, a closed window, lost ACKs, random loss — each
// as one call that builds a private world, runs the client, and returns a
// Report: timeline, retransmission intervals and backoff ratios, the errno
// the application got, theory versus measurement, and a verdict. The same
// Report renders as a table (WriteTable), JSON (WriteJSON, schema in
// docs/report-schema.md) or an SVG time-sequence graph (WriteSVG).
//
// Use it like `unplug run` does:
//
//	sc, _ := scenarios.Lookup("timeout")
//	p, err := scenarios.ParseParams(sc, map[string]string{"retries2": "3"})
//	rep, err := scenarios.Run(ctx, "timeout", p, scenarios.Options{})
//	rep.WriteTable(os.Stdout)
//	met, err := rep.Met("ETIMEDOUT")
//
// On the real clock (the default) each run creates its own network
// namespace (and user namespace when not root) with a TUN device, puts the
// peer — a gVisor netstack with a fault layer — on the TUN inside this
// process, sets the scenario's per-namespace sysctls there, and uses the
// host kernel's TCP for the client, through sockets created inside the
// namespace. Nothing on the host changes. Programs that use it must call
// tun.RunAgentIfRequested first thing in main (and in TestMain).
//
// Scenarios are straight-line blocking code against Env, so the same
// scenario can run on a virtual clock with a gVisor client.
package scenarios
