//go:build !linux

// Package tuntest holds what tests of unplug's packages share to run
// rootless; its helpers need Linux.
package tuntest
