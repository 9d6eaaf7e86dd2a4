package packet

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 is the part of a validated IPv6 fixed header the forwarder needs,
// a small value type like IPv4.
//
// Extension headers are passed through, not walked: NextHeader is the
// fixed header's value (TCP, UDP, ICMPv6, or an extension header such as
// hop-by-hop options or fragment), and the forwarder routes on the fixed
// header's addresses alone, as a router does. Only ShouldAnswer6, which must
// know whether the original is an ICMPv6 error or a non-first fragment,
// follows the chain (a bounded number of headers).
type IPv6 struct {
	Src, Dst   [16]byte
	PayloadLen uint16 // bytes after the fixed header; bytes after it are padding
	NextHeader uint8
	HopLimit   uint8
}

// SrcAddr returns the source address as a netip.Addr (no allocation).
func (p IPv6) SrcAddr() netip.Addr { return netip.AddrFrom16(p.Src) }

// DstAddr returns the destination address as a netip.Addr (no allocation).
func (p IPv6) DstAddr() netip.Addr { return netip.AddrFrom16(p.Dst) }

// Len is the packet's length: fixed header plus payload.
func (p IPv6) Len() int { return IPv6HeaderLen + int(p.PayloadLen) }

// The reasons ParseIPv6 rejects a packet, in ParseError's closed set.
const (
	ErrIPv6TooShort   ParseError = iota + 16 // fewer than 40 bytes
	ErrIPv6Version                           // version field is not 6
	ErrIPv6PayloadLen                        // 40 + payload length > len(b)
)

func (e ParseError) ipv6Error() string {
	switch e {
	case ErrIPv6TooShort:
		return "ipv6: packet shorter than the 40-byte header"
	case ErrIPv6Version:
		return "ipv6: version is not 6"
	case ErrIPv6PayloadLen:
		return "ipv6: payload length beyond the buffer"
	}
	return "ipv6: invalid packet"
}

// ParseIPv6 validates the IPv6 packet at the start of b: version 6, a
// 40-byte fixed header, and 40 + payload length <= len(b). Bytes past that
// are padding; the packet proper is b[:p.Len()]. A payload length of 0 is
// an empty payload (jumbograms, which need a hop-by-hop option and links
// above 64 KiB, never reach an overlay). The error, if any, is a
// ParseError. There is no header checksum to verify.
func ParseIPv6(b []byte) (IPv6, error) {
	if len(b) < IPv6HeaderLen {
		return IPv6{}, ErrIPv6TooShort
	}
	if b[0]>>4 != 6 {
		return IPv6{}, ErrIPv6Version
	}
	payload := binary.BigEndian.Uint16(b[4:6])
	if IPv6HeaderLen+int(payload) > len(b) {
		return IPv6{}, ErrIPv6PayloadLen
	}
	return IPv6{
		Src:        [16]byte(b[8:24]),
		Dst:        [16]byte(b[24:40]),
		PayloadLen: payload,
		NextHeader: b[6],
		HopLimit:   b[7],
	}, nil
}

// DecrementHopLimit lowers the hop limit of the IPv6 header at the start
// of b by one. IPv6 has no header checksum and the upper-layer checksums
// do not cover the hop limit, so nothing else changes. It returns false
// and leaves b untouched when the hop limit is 0 or 1 or b is shorter than
// the fixed header.
func DecrementHopLimit(b []byte) bool {
	if len(b) < IPv6HeaderLen || b[7] <= 1 {
		return false
	}
	b[7]--
	return true
}

// Next-header values ShouldAnswer6 follows.
const (
	protoHopByHop = 0
	protoRouting  = 43
	protoFragment = 44
	protoICMPv6   = 58
	protoDestOpts = 60
)

// maxExtHeaders bounds the extension headers ShouldAnswer6 walks: a
// longer chain is not answered (nothing legitimate needs more).
const maxExtHeaders = 8

// upperLayer follows orig's extension headers to the upper-layer protocol
// and returns it with its offset. ok is false when the chain is cut short,
// too long, or reaches a non-first fragment (whose payload does not start
// with an upper-layer header).
func upperLayer(orig []byte, p IPv6) (proto uint8, off int, ok bool) {
	proto, off = p.NextHeader, IPv6HeaderLen
	end := p.Len()
	for range maxExtHeaders {
		switch proto {
		case protoHopByHop, protoRouting, protoDestOpts:
			if off+8 > end {
				return 0, 0, false
			}
			proto, off = orig[off], off+8*(int(orig[off+1])+1)
		case protoFragment:
			if off+8 > end || binary.BigEndian.Uint16(orig[off+2:off+4])&^7 != 0 {
				return 0, 0, false
			}
			proto, off = orig[off], off+8
		default:
			return proto, off, off <= end
		}
	}
	return 0, 0, false
}
