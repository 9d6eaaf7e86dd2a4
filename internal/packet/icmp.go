package packet

import "encoding/binary"

// ICMP message types and codes the forwarder sends.
const (
	ICMPDestUnreachable = 3
	ICMPTimeExceeded    = 11

	CodeNetUnreachable = 0 // no route to the destination's subnet
	CodeFragNeeded     = 4 // DF set and the packet exceeds the next-hop MTU (RFC 1191)
)

// MaxICMPErrorLen bounds an ICMP error datagram (RFC 1812 4.3.2.3): the
// quote of the original packet is cut so the whole answer fits in 576 bytes.
const MaxICMPErrorLen = 576

// icmpHeaderLen is type, code, checksum and the 4-byte rest-of-header.
const icmpHeaderLen = 8

// minICMPv4MTU is the smallest MTU an IPv4 link may have (RFC 791).
const minICMPv4MTU = 68

// ICMPError is the closed set of reasons DestUnreachable and TimeExceeded
// write nothing.
type ICMPError uint8

const (
	ErrMalformedOriginal ICMPError = iota + 1 // the original does not pass ParseIPv4
	ErrMustNotAnswer                          // ShouldAnswer is false for the original
	ErrShortBuffer                            // dst cannot hold headers + original header + 8 bytes
	ErrBadCode                                // code above 15, not a destination-unreachable code
	ErrBadMTU                                 // frag-needed with a next-hop MTU below 68
)

func (e ICMPError) Error() string {
	switch e {
	case ErrMalformedOriginal:
		return "icmp: original packet is not valid IPv4 (IPv6 for the ICMPv6 errors)"
	case ErrMustNotAnswer:
		return "icmp: original packet must not be answered with an ICMP error"
	case ErrShortBuffer:
		return "icmp: destination buffer too small"
	case ErrBadCode:
		return "icmp: destination-unreachable code out of range"
	case ErrBadMTU:
		return "icmp: next-hop MTU below 68 (1280 for IPv6)"
	}
	return "icmp: cannot build error message"
}

// Why the caller chooses src: flanneld writes its net-unreachable into the
// TUN with a source address the kernel then drops as a martian (an address
// that is local to the host arriving from outside, or one that fails
// reverse-path filtering because it is not routed via the TUN), so the pod
// never learns its destination is unreachable. The forwarder passes the
// original packet's destination address instead: it lies inside the overlay
// Network, is not local to the host and is routed via the TUN, so the answer
// passes rp_filter and reaches the sender.

// DestUnreachable writes into dst[:n] an IPv4 ICMP destination-unreachable
// (type 3) answering orig, sent from src to orig's source, TTL 64. Code 0 is
// net unreachable; code 4 is fragmentation needed and carries nextHopMTU
// (RFC 1191); nextHopMTU is ignored for other codes. The quote is orig's
// header and as much of its payload as fits in 576 bytes total and in dst.
// orig is only read; dst is owned by the caller and may be larger than n.
// It writes nothing and returns an ICMPError when orig is malformed,
// ShouldAnswer refuses it, or dst is too small.
func DestUnreachable(dst []byte, orig []byte, src [4]byte, code uint8, nextHopMTU uint16) (int, error) {
	if code > 15 {
		return 0, ErrBadCode
	}
	var rest uint32
	if code == CodeFragNeeded {
		if nextHopMTU < minICMPv4MTU {
			return 0, ErrBadMTU
		}
		rest = uint32(nextHopMTU)
	}
	return icmpError(dst, orig, src, ICMPDestUnreachable, code, rest)
}

// TimeExceeded writes into dst[:n] an IPv4 ICMP time-exceeded, TTL exceeded
// in transit (type 11 code 0), answering orig; otherwise as DestUnreachable.
func TimeExceeded(dst []byte, orig []byte, src [4]byte) (int, error) {
	return icmpError(dst, orig, src, ICMPTimeExceeded, 0, 0)
}

func icmpError(dst, orig []byte, src [4]byte, typ, code uint8, rest uint32) (int, error) {
	o, err := ParseIPv4(orig)
	if err != nil {
		return 0, ErrMalformedOriginal
	}
	if !ShouldAnswer(o, orig) {
		return 0, ErrMustNotAnswer
	}
	const outer = HeaderLen + icmpHeaderLen
	quote := min(int(o.TotalLen), MaxICMPErrorLen-outer, len(dst)-outer)
	// RFC 792: at least the original header and 64 bits of its payload.
	if quote < min(int(o.TotalLen), int(o.HeaderLen)+8) {
		return 0, ErrShortBuffer
	}
	n := outer + quote
	writeIPv4Header(dst[:HeaderLen], n, src, o.Src)
	msg := dst[HeaderLen:n]
	msg[0], msg[1] = typ, code
	msg[2], msg[3] = 0, 0
	binary.BigEndian.PutUint32(msg[4:8], rest)
	copy(msg[icmpHeaderLen:], orig[:quote])
	binary.BigEndian.PutUint16(msg[2:4], Checksum(msg, 0))
	return n, nil
}

// writeIPv4Header writes a 20-byte ICMP-carrying header with its checksum.
func writeIPv4Header(h []byte, total int, src, dst [4]byte) {
	h[0] = 0x45
	h[1] = 0xc0 // precedence "internetwork control", as Linux sends ICMP errors
	binary.BigEndian.PutUint16(h[2:4], uint16(total))
	binary.BigEndian.PutUint16(h[4:6], 0)      // ID: unused, the datagram is atomic (RFC 6864)
	binary.BigEndian.PutUint16(h[6:8], 0x4000) // DF; <= 576 bytes never needs fragmenting
	h[8] = 64
	h[9] = 1 // ICMP
	h[10], h[11] = 0, 0
	copy(h[12:16], src[:])
	copy(h[16:20], dst[:])
	binary.BigEndian.PutUint16(h[10:12], Checksum(h, 0))
}

// ShouldAnswer reports whether an ICMP error may be sent about orig
// (RFC 1122 3.2.2, RFC 1812 4.3.2.7). It is false for
//   - a non-first fragment;
//   - a source that is not a unicast host: 0.0.0.0 (0/8), loopback 127/8,
//     multicast 224/4, class E 240/4 including 255.255.255.255;
//   - a multicast or limited-broadcast destination;
//   - an ICMP error message (or an ICMP packet too short to tell).
//
// origBytes is the packet orig was parsed from; it is only read.
func ShouldAnswer(orig IPv4, origBytes []byte) bool {
	if !orig.IsFirstFragment() {
		return false
	}
	if !isUnicastSource(orig.Src) || orig.Dst[0] >= 224 {
		return false
	}
	if orig.Proto == 1 {
		hl := int(orig.HeaderLen)
		if hl < HeaderLen || len(origBytes) <= hl || int(orig.TotalLen) <= hl {
			return false
		}
		return !isICMPError(origBytes[hl])
	}
	return true
}

func isUnicastSource(a [4]byte) bool {
	switch {
	case a[0] == 0, a[0] == 127, a[0] >= 224:
		return false
	}
	return true
}

// isICMPError reports whether an ICMP type is an error message. Types Linux
// does not know (above 18) count as errors, as in Linux's icmp_pointers, so
// an unknown message never triggers an answer.
func isICMPError(typ uint8) bool {
	switch typ {
	case 3, 4, 5, 11, 12:
		return true
	}
	return typ > 18
}
