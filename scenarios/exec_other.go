//go:build !linux

package scenarios

import (
	"context"
	"errors"
)

// Exec needs network namespaces and TUN devices, which only Linux has.
func Exec(context.Context, ExecOptions) (ExecResult, error) {
	return ExecResult{}, errors.New("unplug exec needs Linux (a private network namespace with a TUN device)")
}
