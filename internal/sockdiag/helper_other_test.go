//go:build !linux

package sockdiag

func runHelperIfRequested() {}
