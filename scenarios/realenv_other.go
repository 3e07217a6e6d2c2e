//go:build !linux

package scenarios

import (
	"context"
	"errors"
)

// newRealEnv needs network namespaces and TUN devices, which only Linux
// has.
func newRealEnv(ctx context.Context, cfg envConfig) (envCloser, error) {
	return nil, errors.New("the real clock needs Linux (a private network namespace with a TUN device); use the virtual clock")
}
