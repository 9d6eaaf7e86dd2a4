package testbed

import "syscall"

// procAttr puts a started process in a group of its own (Signal reaches
// ip netns exec and its child) and kills it if the test binary dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
