package main

import (
	"strings"

	"github.com/unplug-dev/unplug/stack/fault"
	"github.com/unplug-dev/unplug/stack/services"
)

// faultsValue is the repeatable --fault SPEC flag: each use is parsed at once,
// so a malformed spec is rejected before anything is created.
type faultsValue []fault.Spec

func (v *faultsValue) String() string {
	parts := make([]string, len(*v))
	for i, sp := range *v {
		parts[i] = sp.String()
	}
	return strings.Join(parts, "; ")
}

func (v *faultsValue) Set(s string) error {
	sp, err := fault.ParseSpec(s)
	if err != nil {
		return err
	}
	*v = append(*v, sp)
	return nil
}

func (v *faultsValue) Type() string { return "SPEC" }

// forwardsValue is the repeatable --forward PORT=HOST:PORT flag.
type forwardsValue []services.Forward

func (v *forwardsValue) String() string {
	parts := make([]string, len(*v))
	for i, f := range *v {
		parts[i] = f.String()
	}
	return strings.Join(parts, ",")
}

func (v *forwardsValue) Set(s string) error {
	f, err := services.ParseForward(s)
	if err != nil {
		return err
	}
	*v = append(*v, f)
	return nil
}

func (v *forwardsValue) Type() string { return "PORT=HOST:PORT" }
