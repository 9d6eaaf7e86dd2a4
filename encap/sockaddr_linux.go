package encap

import (
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

var errNotInet = errors.New("encap: not an AF_INET or AF_INET6 socket address")

// sockaddr holds either family's socket address: a sockaddr_in6, which is
// larger than a sockaddr_in, so one preallocated array serves both kinds
// of socket.
type sockaddr = unix.RawSockaddrInet6

// putSockaddr writes ap into sa as a sockaddr_in (v6 false; ap IPv4 or
// IPv4-mapped) or a sockaddr_in6 (v6 true), the port in network byte
// order, and returns the length to pass to the kernel: sendmmsg's names
// and TrySend's sendto.
func putSockaddr(sa *sockaddr, ap netip.AddrPort, v6 bool) uint32 {
	if v6 {
		*sa = sockaddr{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
		putPort(&sa.Port, ap.Port())
		return unix.SizeofSockaddrInet6
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	sa4.Family = unix.AF_INET
	putPort(&sa4.Port, ap.Port())
	sa4.Addr = ap.Addr().Unmap().As4()
	return unix.SizeofSockaddrInet4
}

func putPort(field *uint16, port uint16) {
	p := (*[2]byte)(unsafe.Pointer(field))
	p[0], p[1] = byte(port>>8), byte(port)
}

// parseSockaddr decodes the sockaddr_in or sockaddr_in6 the kernel wrote
// into b (namelen bytes long) on receive.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, errNotInet
	}
	family := *(*uint16)(unsafe.Pointer(&b[0])) // host byte order, like the kernel's
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		port := uint16(b[2])<<8 | uint16(b[3])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case family == unix.AF_INET6 && len(b) >= unix.SizeofSockaddrInet6:
		port := uint16(b[2])<<8 | uint16(b[3])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port), nil
	}
	return netip.AddrPort{}, errNotInet
}

// sockaddrBytes views sa as the bytes the kernel fills.
func sockaddrBytes(sa *sockaddr, namelen uint32) []byte {
	n := min(int(namelen), unix.SizeofSockaddrInet6)
	return unsafe.Slice((*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6)[:n]
}
