//go:build !linux

package reference

import (
	"context"
	"time"

	"github.com/unplug-dev/unplug/stack/fault"
)

// ExecLab is the reference of `unplug exec --reference`; it needs Linux.
type ExecLab struct{ Lab }

// NewExecLab checks the rules translate, then fails: the lab needs Linux.
func NewExecLab(ctx context.Context, prefix string, specs []fault.Spec, sysctls map[string]string) (*ExecLab, error) {
	if _, err := Translate(specs); err != nil {
		return nil, err
	}
	return nil, Available()
}

// Netns is empty here.
func (l *ExecLab) Netns() string { return "" }

// Sysctl fails: the lab needs Linux.
func (l *ExecLab) Sysctl(name string) (string, error) { return "", Available() }

// Begin fails: the lab needs Linux.
func (l *ExecLab) Begin(obs fault.Observer, start time.Time) error { return Available() }

// End does nothing.
func (l *ExecLab) End() error { return nil }

// Rules is empty here.
func (l *ExecLab) Rules() []Rule { return nil }

// Applied is empty here.
func (l *ExecLab) Applied() []Applied { return nil }

// Close does nothing.
func (l *ExecLab) Close() error { return nil }
