package encap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Lone sends one whole packet with the plainest system call on a socket
// descriptor the caller holds (the udp backend's loop holds its sockets'
// for this): sendto for UDP; for IPIP a sendmsg gathering the outer header
// and the packet. WriteBatch's sendmmsg adds message headers and a
// RawControl that one packet does not need. Its state lives in the
// caller's struct, so the system call's arguments do not escape to the
// heap: a zero Lone is ready.
type Lone struct {
	dst   sockaddr // either family's destination
	outer [OuterHeaderLen]byte
	iov   [2]unix.Iovec
	msg   unix.Msghdr
}

// Send sends m (a whole packet: no Head, N > 0) to m.Addr on fd, a socket
// of encapsulation enc and family v6, and reports whether the kernel took
// it; anything it refuses (a full send buffer, an unreachable peer) is for
// WriteBatch, which waits for room or reports the error.
func (l *Lone) Send(fd int, enc Encapsulation, v6 bool, m *Message) bool {
	if m.Head != nil || m.N == 0 {
		return false
	}
	size := PutSockaddr(&l.dst, m.Addr, v6)
	if enc != IPIP {
		_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&m.Buf[0])), uintptr(m.N),
			0, uintptr(unsafe.Pointer(&l.dst)), uintptr(size))
		return errno == 0
	}
	inner := m.Buf[:m.N]
	if !isInnerIPv4(inner) || v6 {
		return false
	}
	putOuterHeader(&l.outer, inner, m.Addr.Addr().As4())
	setIovec(&l.iov[0], l.outer[:])
	setIovec(&l.iov[1], inner)
	l.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&l.dst)), Namelen: size, Iov: &l.iov[0]}
	l.msg.SetIovlen(2)
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&l.msg)), 0)
	l.iov[1].Base = nil // keep no reference to the caller's buffer
	return errno == 0
}
