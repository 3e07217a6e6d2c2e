//go:build !linux

package scenarios

import (
	"context"
	"errors"
)

// ExecIn needs Linux network namespaces.
func ExecIn(ctx context.Context, o ExecOptions, lab ExecLab) (ExecResult, error) {
	return ExecResult{}, errors.New("exec --reference needs Linux network namespaces")
}
