package packet

import "encoding/binary"

// ICMPv6 error types and codes the forwarder sends (RFC 4443).
const (
	ICMPv6DestUnreachable = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3

	CodeNoRoute = 0 // destination unreachable: no route to destination
)

// MaxICMPv6ErrorLen bounds an ICMPv6 error datagram (RFC 4443 2.4(c)): as
// much of the original as fits without the answer exceeding the minimum
// IPv6 MTU.
const MaxICMPv6ErrorLen = 1280

// MinIPv6MTU is the smallest MTU an IPv6 link may have (RFC 8200): a
// packet-too-big never announces less.
const MinIPv6MTU = 1280

// hopLimitICMPv6 is the hop limit of the answers, Linux's default.
const hopLimitICMPv6 = 64

// DestUnreachable6 writes into dst[:n] an ICMPv6 destination unreachable,
// no route to destination (type 1 code 0), answering the IPv6 packet orig,
// sent from src to orig's source. The source is chosen as for IPv4 (see
// DestUnreachable): an overlay address routed through the TUN. It writes
// nothing and returns an ICMPError when orig is not valid IPv6,
// ShouldAnswer6 refuses it, or dst cannot hold the header and 8 bytes of
// orig.
func DestUnreachable6(dst, orig []byte, src [16]byte) (int, error) {
	return icmp6Error(dst, orig, src, ICMPv6DestUnreachable, CodeNoRoute, 0)
}

// PacketTooBig writes an ICMPv6 packet too big (type 2) carrying mtu, the
// largest packet the next hop (the overlay) carries; otherwise as
// DestUnreachable6. mtu below 1280 is ErrBadMTU.
func PacketTooBig(dst, orig []byte, src [16]byte, mtu uint32) (int, error) {
	if mtu < MinIPv6MTU {
		return 0, ErrBadMTU
	}
	return icmp6Error(dst, orig, src, ICMPv6PacketTooBig, 0, mtu)
}

// TimeExceeded6 writes an ICMPv6 time exceeded, hop limit exceeded in
// transit (type 3 code 0); otherwise as DestUnreachable6.
func TimeExceeded6(dst, orig []byte, src [16]byte) (int, error) {
	return icmp6Error(dst, orig, src, ICMPv6TimeExceeded, 0, 0)
}

func icmp6Error(dst, orig []byte, src [16]byte, typ, code uint8, rest uint32) (int, error) {
	o, err := ParseIPv6(orig)
	if err != nil {
		return 0, ErrMalformedOriginal
	}
	if !ShouldAnswer6(o, orig) {
		return 0, ErrMustNotAnswer
	}
	const outer = IPv6HeaderLen + icmpHeaderLen
	quote := min(o.Len(), MaxICMPv6ErrorLen-outer, len(dst)-outer)
	if quote < IPv6HeaderLen+8 {
		return 0, ErrShortBuffer
	}
	n := outer + quote
	h := dst[:IPv6HeaderLen]
	binary.BigEndian.PutUint32(h[0:4], 6<<28) // version, traffic class 0, flow label 0
	binary.BigEndian.PutUint16(h[4:6], uint16(n-IPv6HeaderLen))
	h[6], h[7] = protoICMPv6, hopLimitICMPv6
	copy(h[8:24], src[:])
	copy(h[24:40], o.Src[:])
	msg := dst[IPv6HeaderLen:n]
	msg[0], msg[1] = typ, code
	msg[2], msg[3] = 0, 0
	binary.BigEndian.PutUint32(msg[4:8], rest)
	copy(msg[icmpHeaderLen:], orig[:quote])
	// Unlike ICMPv4, the ICMPv6 checksum covers a pseudo-header.
	binary.BigEndian.PutUint16(msg[2:4], Checksum(msg, PseudoSum(protoICMPv6, src[:], o.Src[:], len(msg))))
	return n, nil
}

// ShouldAnswer6 reports whether an ICMPv6 error may be sent about orig
// (RFC 4443 2.4(e)). It is false for
//   - a source that is not a unicast host: ::, ::1, multicast ff00::/8;
//   - a multicast destination (the exceptions RFC 4443 allows are not used);
//   - an ICMPv6 error message (types below 128), or an ICMPv6 packet too
//     short to tell;
//   - a non-first fragment, or an extension-header chain that is cut short
//     or longer than 8 headers (the upper layer cannot be told).
//
// origBytes is the packet orig was parsed from; it is only read.
func ShouldAnswer6(orig IPv6, origBytes []byte) bool {
	if orig.Src[0] == 0xff || orig.Dst[0] == 0xff || isUnspecifiedOrLoopback(orig.Src) {
		return false
	}
	proto, off, ok := upperLayer(origBytes, orig)
	if !ok {
		return false
	}
	if proto == protoICMPv6 {
		return off < orig.Len() && origBytes[off] >= 128 // informational
	}
	return true
}

func isUnspecifiedOrLoopback(a [16]byte) bool {
	for _, b := range a[:15] {
		if b != 0 {
			return false
		}
	}
	return a[15] <= 1
}
