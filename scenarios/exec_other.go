//go:build !linux

package scenarios

import (
	"context"
	"errors"
)

// Exec needs network namespaces and TUN devices, which only Linux has.
func Exec(context.Context, ExecOptions) (int, error) {
	return 0, errors.New("unplug exec needs Linux (a private network namespace with a TUN device)")
}
