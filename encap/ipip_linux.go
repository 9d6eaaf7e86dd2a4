package encap

import (
	"errors"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// The IPIP socket is a raw IPv4 socket of protocol 4 with IP_HDRINCL: it
// writes the outer header itself, because the kernel's ipip device (as
// flanneld creates flannel.ipip: ttl inherit, nopmtudisc, tos 0) derives
// it from each inner packet, which a socket option cannot: outer TTL = the
// inner TTL, outer DF = the inner DF, the outer ECN field the inner one
// (a CE mark travels as ECT(0), RFC 6040's normal mode), DSCP 0. The
// kernel fills in the total length, the checksum, the source (the bound
// address) and the identification (0 with DF, as it does for any atomic
// datagram it sends; the ipip device picks one, which no receiver reads).

// putOuterHeader writes the outer IPv4 header for inner, whose first
// bytes are its IPv4 header, to dst.
func putOuterHeader(h *[OuterHeaderLen]byte, inner []byte, dst [4]byte) {
	*h = [OuterHeaderLen]byte{0: 0x45, 9: unix.IPPROTO_IPIP}
	h[1] = ecnEncapsulate(inner[1])
	h[6] = inner[6] & 0x40 // DF
	h[8] = inner[8]        // TTL
	copy(h[16:], dst[:])
}

// ecnEncapsulate is the kernel's INET_ECN_encapsulate for an outer TOS of
// 0: the inner ECN field, CE sent as ECT(0).
func ecnEncapsulate(innerTOS byte) byte {
	if ecn := innerTOS & 3; ecn != 3 {
		return ecn
	}
	return 2
}

// innerStart is the start of the inner packet a message carries: its
// Head, or Buf when there is none.
func innerStart(m *Message) []byte {
	if len(m.Head) > 0 {
		return m.Head
	}
	return m.Buf[:m.N]
}

// isInnerIPv4 reports whether b starts with an IPv4 header, which an
// IPIP socket needs to derive the outer header from.
func isInnerIPv4(b []byte) bool {
	return len(b) >= OuterHeaderLen && b[0]>>4 == 4
}

// outerLen is the length of the outer IPv4 header at the start of a packet
// a raw socket received, or len(b) when it is not one (the inner packet
// is then empty, and dropped as malformed).
func outerLen(b []byte) int {
	if len(b) < OuterHeaderLen || b[0]>>4 != 4 {
		return len(b)
	}
	if hl := int(b[0]&0x0f) * 4; hl >= OuterHeaderLen && hl <= len(b) {
		return hl
	}
	return len(b)
}

// setIPIPOptions runs before bind on an IPIP socket: the header is ours
// to write.
func setIPIPOptions(fd, bufSize int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
		return os.NewSyscallError("setsockopt IP_HDRINCL", err)
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, bufSize); err != nil {
		return err
	}
	return setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, bufSize)
}

// checkIPIP refuses what an IPIP socket cannot do.
func checkIPIP(cfg Config, addr netip.Addr) error {
	switch {
	case isIPv6(addr):
		return errors.New("encap: an IPIP socket carries IPv4 over IPv4 only")
	case cfg.ReusePort:
		return errors.New("encap: IPIP sockets cannot share an address: each raw socket receives every packet")
	}
	return nil
}
