package encap

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/poller"
)

// loneOp is the preallocated state of TrySend; step is its system call.
// It lives in the Conn so that the call's arguments do not escape to the
// heap.
type loneOp struct {
	op    poller.Op
	ipip  bool
	buf   []byte // the packet, during a call
	dst   sockaddr
	size  uint32
	outer [OuterHeaderLen]byte
	iov   [2]unix.Iovec
	msg   unix.Msghdr
}

// TrySend sends m, one whole packet (no Head, N > 0), with the plainest
// system call, if the kernel takes it at once: sendto for UDP, for IPIP a
// sendmsg gathering the outer header and the packet. WriteBatch's
// sendmmsg adds message headers and GSO's grouping, which one packet does
// not need: the packet of each turn of a request-response exchange goes
// out this way (its cost in BENCHMARKS.md). It reports whether m went;
// anything else (a full send buffer, an unreachable peer, a message
// WriteBatch would refuse) is left to WriteBatch, which waits for room or
// reports the error.
func (c *Conn) TrySend(m *Message) bool {
	addr := m.Addr.Addr()
	if m.Head != nil || m.N <= 0 || m.N > len(m.Buf) || !addr.IsValid() || isIPv6(addr) != c.v6 {
		return false
	}
	l := &c.lone
	l.buf = m.Buf[:m.N]
	l.size = putSockaddr(&l.dst, m.Addr, c.v6)
	if l.ipip {
		if !isInnerIPv4(l.buf) {
			l.buf = nil
			return false
		}
		putOuterHeader(&l.outer, l.buf, addr.As4())
		setIovec(&l.iov[0], l.outer[:])
		setIovec(&l.iov[1], l.buf)
		l.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&l.dst)), Namelen: l.size, Iov: &l.iov[0]}
		l.msg.SetIovlen(2)
	}
	ready, errno, err := l.op.Try(c.raw)
	l.buf, l.iov[1].Base = nil, nil // keep no reference to the caller's buffer
	return ready && errno == 0 && err == nil
}

// step sends the one packet.
func (l *loneOp) step(fd uintptr) (bool, unix.Errno) {
	var e unix.Errno
	if l.ipip {
		_, _, e = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&l.msg)), 0)
	} else {
		_, _, e = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&l.buf[0])), uintptr(len(l.buf)),
			0, uintptr(unsafe.Pointer(&l.dst)), uintptr(l.size))
	}
	return true, e
}
