package offload

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/flannelu/flannelu/internal/packet"
)

// MaxHeaderLen is the longest IP plus TCP/UDP header of a segment: an IPv4
// header with options and a TCP header with options, 60 bytes each. A
// header slot of Split needs this much capacity.
const MaxHeaderLen = 60 + 60

// Split cuts a GSO super-packet read from an IFF_VNET_HDR TUN (pkt, without
// its virtio header, which the caller decoded into hdr; GSOType TCPv4,
// TCPv6 or UDP_L4, optionally with the ECN bit) into wire packets without
// copying its payload: wire packet i is heads[i] followed by payloads[i].
//
// Split writes segment i's headers into heads[i] (its memory, up to its
// capacity, which must hold the super-packet's headers: MaxHeaderLen is
// always enough) and sets heads[i] to them; payloads[i] becomes the slice
// of pkt holding the segment's at most hdr.GSOSize payload bytes (the last
// may be shorter). Each header is the super-packet's with the IP length
// fixed, IPv4 ID = ID+i and header checksum recomputed, TCP sequence
// advanced by the payload before it, FIN and PSH only on the last and CWR
// only on the first segment, UDP length fixed, and a full L4 checksum
// (the payload summed where it lies, the headers' share once per
// super-packet: see shared).
//
// pkt is only read, must not overlap any heads[i], and must stay unchanged
// while the payloads are in use. With fewer than the number of segments in
// heads or payloads Split returns ErrNoRoom; a malformed packet (bad
// lengths, no or an unsupported GSO type, hdr.HdrLen past the end, GSOSize
// 0) gives an error. In both cases nothing is written. Split returns the
// number of segments and does not allocate.
func Split(pkt []byte, hdr packet.VirtioNetHdr, heads, payloads [][]byte) (int, error) {
	if int(hdr.HdrLen) > len(pkt) {
		return 0, fmt.Errorf("offload: hdr_len %d past the end of a %d-byte packet", hdr.HdrLen, len(pkt))
	}
	gso := hdr.GSOType &^ packet.GSOECNBit
	if gso == packet.GSONone {
		return 0, errors.New("offload: not a GSO packet")
	}
	if hdr.GSOSize == 0 {
		return 0, errors.New("offload: GSO packet with gso_size 0")
	}
	ip, err := parseIP(pkt)
	if err != nil {
		return 0, err
	}
	if err := checkGSOType(gso, ip); err != nil {
		return 0, err
	}
	if err := checkCsumFields(hdr, ip); err != nil {
		return 0, err
	}
	l4Len, err := l4HdrLen(pkt, ip)
	if err != nil {
		return 0, err
	}
	hdrLen := ip.l4Off + l4Len
	gsoSize := int(hdr.GSOSize)
	n := max(1, (len(pkt)-hdrLen+gsoSize-1)/gsoSize)
	if err := checkRoom(n, hdrLen, heads, payloads); err != nil {
		return 0, err
	}
	sums := sharedSums(pkt[:hdrLen], ip)
	for i := range n {
		start := hdrLen + i*gsoSize
		head := heads[i][:hdrLen]
		copy(head, pkt[:hdrLen])
		payloads[i] = pkt[start:min(start+gsoSize, len(pkt))]
		fixHead(head, payloads[i], ip, sums, i, n, i*gsoSize)
		heads[i] = head
	}
	return n, nil
}

// shared is what the checksums of every segment of one super-packet have
// in common: the sums of its headers with the words that differ between
// segments (and the checksum fields) taken out. Ones' complement sums add
// in any order, so a segment's checksum is its shared sum plus its own
// values of those words plus its payload: per segment only the payload
// is summed in full. Measured (BenchmarkSplitTSO4, 44 segments) the
// header sums were 40 % of Split's time when summed per segment.
type shared struct {
	ip uint64 // IPv4 header without total length, ID and checksum
	l4 uint64 // pseudo-header without the length; L4 header without sequence number, flags word (TCP), length (UDP) and checksum
}

// sharedSums computes shared for the super-packet headers hdr. It does not
// trust the checksum fields: it takes out whatever they hold.
func sharedSums(hdr []byte, ip ipInfo) shared {
	var s shared
	if !ip.v6 {
		h := hdr[:ip.l4Off]
		s.ip = packet.Sum(h, 0) + not16(h[2:]) + not16(h[4:]) + not16(h[10:])
	}
	l4 := hdr[ip.l4Off:]
	src, dst := addrs(hdr, ip)
	s.l4 = packet.Sum(l4, packet.PseudoSum(ip.proto, src, dst, 0))
	if ip.proto == protoTCP {
		s.l4 += not16(l4[4:]) + not16(l4[6:]) + not16(l4[12:]) + not16(l4[tcpCsumOffset:])
	} else {
		s.l4 += not16(l4[4:]) + not16(l4[udpCsumOffset:])
	}
	return s
}

// not16 is the ones' complement of the 16-bit word at b: adding it
// subtracts the word from a ones' complement sum.
func not16(b []byte) uint64 { return uint64(^binary.BigEndian.Uint16(b)) }

func checkGSOType(gso uint8, ip ipInfo) error {
	switch {
	case gso == packet.GSOTCPv4 && !ip.v6 && ip.proto == protoTCP,
		gso == packet.GSOTCPv6 && ip.v6 && ip.proto == protoTCP,
		gso == packet.GSOUDPL4 && ip.proto == protoUDP:
		return nil
	case gso == packet.GSOUDP:
		return errors.New("offload: GSO_UDP (UFO) is not supported")
	default:
		return fmt.Errorf("offload: GSO type %d does not match IPv6=%t protocol %d", gso, ip.v6, ip.proto)
	}
}

// checkCsumFields rejects a NEEDS_CSUM header that points somewhere else than
// the packet's L4 checksum: the kernel and the headers disagree, so neither
// can be trusted.
func checkCsumFields(hdr packet.VirtioNetHdr, ip ipInfo) error {
	if hdr.Flags&packet.FlagNeedsCsum == 0 {
		return nil
	}
	want := tcpCsumOffset
	if ip.proto == protoUDP {
		want = udpCsumOffset
	}
	if int(hdr.CsumStart) != ip.l4Off || int(hdr.CsumOffset) != want {
		return fmt.Errorf("offload: csum_start/offset %d/%d, packet has L4 at %d (checksum +%d)",
			hdr.CsumStart, hdr.CsumOffset, ip.l4Off, want)
	}
	return nil
}

// ErrNoRoom says Split has fewer header slots than the super-packet has
// segments: the caller can flush what it holds and call again with more.
// It is a plain sentinel so that this expected case allocates nothing.
var ErrNoRoom = errors.New("offload: more segments than header slots")

func checkRoom(n, hdrLen int, heads, payloads [][]byte) error {
	if len(heads) < n || len(payloads) < n {
		return ErrNoRoom
	}
	for i := range n {
		if cap(heads[i]) < hdrLen {
			return fmt.Errorf("offload: header slot %d holds %d bytes, headers are %d", i, cap(heads[i]), hdrLen)
		}
	}
	return nil
}

// fixHead rewrites head, the headers of segment i of n whose payload
// starts payloadOff bytes into the super-packet's payload, and completes
// its checksums from sums (sharedSums) and the words it changed.
func fixHead(head, payload []byte, ip ipInfo, sums shared, i, n, payloadOff int) {
	total := len(head) + len(payload)
	if ip.v6 {
		binary.BigEndian.PutUint16(head[4:6], uint16(total-packet.IPv6HeaderLen))
	} else {
		id := binary.BigEndian.Uint16(head[4:6]) + uint16(i)
		binary.BigEndian.PutUint16(head[2:4], uint16(total))
		binary.BigEndian.PutUint16(head[4:6], id)
		binary.BigEndian.PutUint16(head[10:12], ^packet.Fold(sums.ip+uint64(total)+uint64(id)))
	}
	l4 := head[ip.l4Off:]
	l4Len := total - ip.l4Off
	sum := sums.l4 + uint64(l4Len) // the pseudo-header's length
	csumOff := udpCsumOffset
	if ip.proto == protoTCP {
		csumOff = tcpCsumOffset
		seq := binary.BigEndian.Uint32(l4[4:8]) + uint32(payloadOff)
		binary.BigEndian.PutUint32(l4[4:8], seq)
		if i != n-1 {
			l4[13] &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			l4[13] &^= tcpCWR
		}
		sum += uint64(seq>>16) + uint64(seq&0xffff) + uint64(binary.BigEndian.Uint16(l4[12:14]))
	} else {
		binary.BigEndian.PutUint16(l4[4:6], uint16(l4Len))
		sum += uint64(l4Len)
	}
	// 0 is sent as 0xffff, which means the same in ones' complement and
	// for UDP is required (0 means "no checksum").
	c := packet.Checksum(payload, sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumOff:], c)
}

// CompleteChecksum finishes, in place, the checksum of a packet.GSONone packet read
// with packet.FlagNeedsCsum: the field at CsumStart+CsumOffset holds the folded
// pseudo-header sum, and the sum of everything from CsumStart on is added,
// exactly as the kernel's skb_checksum_help does. Without the flag it does
// nothing. It errors when the offsets point outside pkt.
func CompleteChecksum(pkt []byte, hdr packet.VirtioNetHdr) error {
	if hdr.Flags&packet.FlagNeedsCsum == 0 {
		return nil
	}
	if int(hdr.CsumStart)+int(hdr.CsumOffset)+2 > len(pkt) {
		return fmt.Errorf("offload: checksum at %d+%d past the end of a %d-byte packet",
			hdr.CsumStart, hdr.CsumOffset, len(pkt))
	}
	start, at := int(hdr.CsumStart), int(hdr.CsumStart)+int(hdr.CsumOffset)
	c := packet.Checksum(pkt[start:], 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
	return nil
}
