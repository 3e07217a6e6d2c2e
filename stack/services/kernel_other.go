//go:build !linux

package services

import "syscall"

// ServeKernel closes fd: serving on kernel sockets is only needed by the
// Linux-only iptables reference.
func ServeKernel(done <-chan struct{}, name string, fd int) { syscall.Close(fd) }
