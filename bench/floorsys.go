//go:build linux

package main

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscaller makes the forwarder's system calls. unix.Syscall6 tells the Go
// scheduler that the thread may block (entersyscall / exitsyscall): while
// the call lasts, sysmon may take the thread's P and hand it to another
// thread, and the thread must get one back when the call returns.
// unix.RawSyscall6 (the -raw form) does not: the locked thread keeps its
// P while it sleeps in poll, as flanneld's C loop, which never returns to
// Go, keeps its thread.
type syscaller func(trap, a1, a2, a3, a4, a5, a6 uintptr) (r1, r2 uintptr, err unix.Errno)

func (f *forwarder) call(trap uintptr, a1, a2, a3, a4, a5, a6 uintptr) (int, error) {
	sys := f.sys
	if sys == nil {
		sys = unix.Syscall6
	}
	n, _, errno := sys(trap, a1, a2, a3, a4, a5, a6)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func bufArgs(buf []byte) (uintptr, uintptr) {
	return uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(len(buf))
}

func (f *forwarder) read(fd int, buf []byte) (int, error) {
	p, n := bufArgs(buf)
	return f.call(unix.SYS_READ, uintptr(fd), p, n, 0, 0, 0)
}

func (f *forwarder) write(fd int, buf []byte) error {
	p, n := bufArgs(buf)
	_, err := f.call(unix.SYS_WRITE, uintptr(fd), p, n, 0, 0, 0)
	return err
}

// recv is recv(2): recvfrom without the sender's address, which x/sys's
// Recvfrom would allocate per call (the floor checks no sender).
func (f *forwarder) recv(fd int, buf []byte, flags int) (int, error) {
	p, n := bufArgs(buf)
	return f.call(unix.SYS_RECVFROM, uintptr(fd), p, n, uintptr(flags), 0, 0)
}

// sendto sends buf to an IPv4 address, with the sockaddr on the stack
// (x/sys's Sendto is free of allocation too, but always tells the
// scheduler).
func (f *forwarder) sendto(fd int, buf []byte, to *unix.SockaddrInet4) error {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: to.Addr}
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port[0], port[1] = byte(to.Port>>8), byte(to.Port)
	p, n := bufArgs(buf)
	_, err := f.call(unix.SYS_SENDTO, uintptr(fd), p, n, 0, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	return err
}

// poll waits without a timeout until one of fds is ready. In the raw form
// the Go scheduler never learns that the thread sleeps: it still holds
// its P, so the other goroutines (the signal handler's) run only when
// this one yields. sysmon's preemption signal (every 10 ms of a busy P)
// ends the wait with EINTR, and poll yields then.
func (f *forwarder) poll(fds []unix.PollFd) error {
	_, err := f.call(unix.SYS_PPOLL, uintptr(unsafe.Pointer(unsafe.SliceData(fds))), uintptr(len(fds)), 0, 0, 0, 0)
	if err == unix.EINTR && f.sys != nil {
		runtime.Gosched()
	}
	return err
}
