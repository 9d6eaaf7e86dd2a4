package incumbent

import (
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// portHeld reports whether a listener without SO_REUSEPORT is bound to
// addr: a bind with SO_REUSEPORT fails then, and succeeds beside
// flannelu's own health server (any version's: it sets SO_REUSEPORT).
// The probe socket is bound, never listening, and closed at once.
func portHeld(addr string) bool { return heldWithoutReusePort(unix.SOCK_STREAM, addr) }

// udpPortHeld is portHeld for a UDP socket: flanneld's udp backend binds
// its port without SO_REUSEPORT, flannelu's with it.
func udpPortHeld(addr string) bool { return heldWithoutReusePort(unix.SOCK_DGRAM, addr) }

func heldWithoutReusePort(typ int, addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()})
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// SO_REUSEADDR as every Go listener: connections in TIME_WAIT (a
	// prober's, after flanneld has gone) do not hold the port then.
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			return false
		}
	}
	return unix.Bind(fd, sa) == syscall.EADDRINUSE
}
