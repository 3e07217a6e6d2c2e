//go:build !linux

package scenarios

import (
	"context"
	"errors"
)

// newRealEnv needs network namespaces and TUN devices, which only Linux
// has.
func newRealEnv(ctx context.Context, cfg envConfig) (envCloser, error) {
	return nil, errors.New("--clock real needs Linux (a private network namespace with a TUN device); use --clock virtual")
}
