//go:build !linux

package testbed

import "syscall"

// procAttr puts a started process in a group of its own. Network
// namespaces are Linux's, so a testbed does not get further than this on
// other systems; this only keeps the package building.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
