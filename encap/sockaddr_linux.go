package encap

import (
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

var errNotInet4 = errors.New("encap: not an AF_INET socket address")

// putSockaddr writes ap, which must be IPv4 (or IPv4-mapped), as a
// sockaddr_in; the port goes in network byte order.
func putSockaddr(sa *unix.RawSockaddrInet4, ap netip.AddrPort) {
	sa.Family = unix.AF_INET
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port[0], port[1] = byte(ap.Port()>>8), byte(ap.Port())
	sa.Addr = ap.Addr().Unmap().As4()
}

// parseSockaddr decodes the sockaddr_in the kernel wrote into b (namelen
// bytes long) on receive.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < unix.SizeofSockaddrInet4 {
		return netip.AddrPort{}, errNotInet4
	}
	family := *(*uint16)(unsafe.Pointer(&b[0])) // host byte order, like the kernel's
	if family != unix.AF_INET {
		return netip.AddrPort{}, errNotInet4
	}
	port := uint16(b[2])<<8 | uint16(b[3])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
}

// sockaddrBytes views sa as the bytes the kernel fills.
func sockaddrBytes(sa *unix.RawSockaddrInet4, namelen uint32) []byte {
	n := min(int(namelen), unix.SizeofSockaddrInet4)
	return unsafe.Slice((*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4)[:n]
}
