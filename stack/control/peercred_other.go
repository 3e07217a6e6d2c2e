//go:build !linux && !darwin

package control

import "net"

// peerUID cannot read peer credentials on this system; the server then
// relies on the socket file's 0600 mode alone.
func peerUID(*net.UnixConn) (int, error) { return 0, errPeerCredUnsupported }
