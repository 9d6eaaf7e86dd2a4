//go:build !linux

package daemon

import "syscall"

// reusePort does nothing: flannelu runs on Linux only.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
