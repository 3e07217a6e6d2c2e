// Package scenarios packages the experiments unplug runs — a request sent
// into a dead link, a writer filling its send buffer, a brief outage, an idle
// connection with and without keepalive, and more — each as one call that
// builds a private world (namespace, TUN, peer; or a virtual-time pair of
// stacks), runs the client, and returns a Report: timeline, retransmission
// intervals, the error the application got, theory versus measurement, and a
// verdict. The same Report renders as a table, JSON or an SVG
// time-sequence graph.
//
// Call Run(ctx, name, params) from Go, or `unplug run NAME` from a shell.
package scenarios
