//go:build !linux

package reference

import (
	"context"
	"errors"

	"github.com/unplug-dev/unplug/scenarios"
)

// Lab is the reference setup; it needs Linux network namespaces.
type Lab struct {
	// Client, Server and Iptables are as on Linux (always empty here).
	Client, Server, Iptables string
}

// Available reports that the reference needs Linux.
func Available() error {
	return errors.New("the reference needs Linux (network namespaces, veth, iptables)")
}

// NewLab fails: the reference needs Linux.
func NewLab(ctx context.Context, prefix string) (*Lab, error) { return nil, Available() }

// Run fails: the reference needs Linux.
func (l *Lab) Run(ctx context.Context, name string, params scenarios.Params) (Series, error) {
	return Series{}, Available()
}

// Close does nothing.
func (l *Lab) Close() error { return nil }
