// Package tun provides the packet devices unplug's peer sits on: a real TUN
// device (created or attached, Linux only), an in-memory pair for tests, and
// the network-namespace plumbing that lets scenarios run without touching the
// host's own network.
//
// A Device carries raw IP packets (IPv4 or IPv6, no link header, no packet
// information prefix), one packet per Read or Write.
package tun

import "errors"

// Device is a point-to-point packet device carrying raw IP packets.
//
// Read blocks until one packet arrives and copies it into p, returning its
// length; it returns an error wrapping ErrClosed after Close. Write sends one
// packet. Implementations are safe for one concurrent reader and any number
// of concurrent writers.
type Device interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	// Name is the interface name ("unplug0") or a descriptive label.
	Name() string
	// MTU is the largest packet the device carries.
	MTU() int
	// Close releases the device; a device unplug created is removed.
	Close() error
}

// ErrClosed is returned by Read and Write on a closed device.
var ErrClosed = errors.New("tun: device closed")
