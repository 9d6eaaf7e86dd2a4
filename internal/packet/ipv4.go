// Package packet is the one home of the header formats and checksums the
// data path reads and writes in place on byte slices: IPv4 validation, TTL
// decrement, the ICMP errors the forwarder answers with, the Internet
// checksum, the length an IP header declares, and the virtio_net_hdr of a
// TUN opened with IFF_VNET_HDR. offload, tun and the udp backend build on
// it. Nothing here allocates; every function works on buffers the caller
// owns.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// HeaderLen is the length of an IPv4 header without options.
const HeaderLen = 20

// IPv4 is the part of a validated IPv4 header the forwarder needs. It is a
// small value type: copying it is cheap and it holds no reference to the
// packet bytes.
type IPv4 struct {
	Src, Dst  [4]byte
	TotalLen  uint16 // header + payload, in bytes; bytes after it are padding
	FragOff   uint16 // fragment offset in 8-byte units; 0 for a first fragment
	HeaderLen uint8  // IHL*4, in bytes, 20..60
	Proto     uint8
	TTL       uint8
	DF        bool // don't fragment
	MF        bool // more fragments follow
}

// IsFirstFragment reports whether the packet carries the start of its
// payload (an unfragmented packet is its own first fragment).
func (p IPv4) IsFirstFragment() bool { return p.FragOff == 0 }

// SrcAddr returns the source address as a netip.Addr (no allocation).
func (p IPv4) SrcAddr() netip.Addr { return netip.AddrFrom4(p.Src) }

// DstAddr returns the destination address as a netip.Addr (no allocation).
func (p IPv4) DstAddr() netip.Addr { return netip.AddrFrom4(p.Dst) }

// ParseError is the closed set of reasons ParseIPv4 rejects a packet.
type ParseError uint8

const (
	ErrTooShort       ParseError = iota + 1 // fewer than 20 bytes, or fewer than IHL*4
	ErrVersion                              // version field is not 4
	ErrHeaderLen                            // IHL < 5
	ErrTotalLen                             // total length < IHL*4 or > len(b)
	ErrHeaderChecksum                       // header checksum does not verify
)

func (e ParseError) Error() string {
	switch e {
	case ErrTooShort:
		return "ipv4: packet shorter than its header"
	case ErrVersion:
		return "ipv4: version is not 4"
	case ErrHeaderLen:
		return "ipv4: header length below 20 bytes"
	case ErrTotalLen:
		return "ipv4: total length outside header length..buffer length"
	case ErrHeaderChecksum:
		return "ipv4: bad header checksum"
	}
	if e >= ErrIPv6TooShort {
		return e.ipv6Error()
	}
	return "ipv4: invalid packet"
}

// ParseIPv4 validates the IPv4 packet at the start of b: version 4,
// IHL >= 5, IHL*4 <= total length <= len(b), and a correct header checksum.
// Bytes of b past the total length are allowed (padding) and ignored; the
// packet proper is b[:p.TotalLen]. The error, if any, is a ParseError.
func ParseIPv4(b []byte) (IPv4, error) { return parseIPv4(b, true) }

// ParseIPv4NoChecksum is ParseIPv4 without the header checksum check, for
// headers the local kernel built (a TUN's super-packets) or ones already
// verified.
func ParseIPv4NoChecksum(b []byte) (IPv4, error) { return parseIPv4(b, false) }

// parseIPv4 is both parsers; the exported ones inline, so the forwarder's
// ParseIPv4 stays one call.
func parseIPv4(b []byte, verify bool) (IPv4, error) {
	if len(b) < HeaderLen {
		return IPv4{}, ErrTooShort
	}
	if b[0]>>4 != 4 {
		return IPv4{}, ErrVersion
	}
	hl := int(b[0]&0x0f) * 4
	if hl < HeaderLen {
		return IPv4{}, ErrHeaderLen
	}
	if len(b) < hl {
		return IPv4{}, ErrTooShort
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < hl || total > len(b) {
		return IPv4{}, ErrTotalLen
	}
	if verify && Checksum(b[:hl], 0) != 0 {
		return IPv4{}, ErrHeaderChecksum
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	return IPv4{
		Src:       [4]byte(b[12:16]),
		Dst:       [4]byte(b[16:20]),
		TotalLen:  uint16(total),
		FragOff:   frag & 0x1fff,
		HeaderLen: uint8(hl),
		Proto:     b[9],
		TTL:       b[8],
		DF:        frag&0x4000 != 0,
		MF:        frag&0x2000 != 0,
	}, nil
}

// DecrementTTL lowers the TTL of the IPv4 header at the start of b by one
// and patches the header checksum incrementally (UpdateChecksum16). It
// returns false and leaves b untouched when the TTL is 0 or 1 (the caller
// drops the packet or answers time-exceeded) or when b is shorter than an
// IPv4 header.
// b should have passed ParseIPv4.
func DecrementTTL(b []byte) bool {
	if len(b) < HeaderLen || b[8] <= 1 {
		return false
	}
	old := binary.BigEndian.Uint16(b[8:10]) // TTL and protocol share a word
	b[8]--
	hc := binary.BigEndian.Uint16(b[10:12])
	binary.BigEndian.PutUint16(b[10:12], UpdateChecksum16(hc, old, binary.BigEndian.Uint16(b[8:10])))
	return true
}
