package offload

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/flannelu/flannelu/packet"
)

// Split turns one packet read from an IFF_VNET_HDR TUN (pkt, without its
// virtio header, which the caller decoded into hdr) into plain IP packets
// ready for the wire.
//
// For a GSO packet (GSOType TCPv4, TCPv6 or UDP_L4, optionally with the ECN
// bit) it writes segments of at most hdr.GSOSize payload bytes: segment i to
// out[i][offset:offset+sizes[i]]. Each segment gets the headers of pkt with
// the IP length fixed, IPv4 ID = ID+i and header checksum recomputed, TCP
// sequence advanced by the payload before it, FIN and PSH only on the last
// and CWR only on the first segment, UDP length fixed, and a full L4
// checksum. A packet.GSONone packet is copied to out[0] and, if packet.FlagNeedsCsum is
// set, its checksum is completed (CompleteChecksum).
//
// len(sizes) must be >= the number of segments, and so must len(out), each
// out[i] having at least offset+sizes[i] bytes; otherwise Split returns an
// error before writing anything. pkt is only read and must not overlap any
// out[i]. Split returns the number of packets written; a malformed packet
// (bad lengths, unsupported GSO type, hdr.HdrLen past the end, GSOSize 0)
// gives an error and no packets. It does not allocate.
func Split(pkt []byte, hdr packet.VirtioNetHdr, out [][]byte, sizes []int, offset int) (int, error) {
	if offset < 0 {
		return 0, fmt.Errorf("offload: negative offset %d", offset)
	}
	if int(hdr.HdrLen) > len(pkt) {
		return 0, fmt.Errorf("offload: hdr_len %d past the end of a %d-byte packet", hdr.HdrLen, len(pkt))
	}
	gso := hdr.GSOType &^ packet.GSOECNBit
	if gso == packet.GSONone {
		return splitNone(pkt, hdr, out, sizes, offset)
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
	payload := len(pkt) - hdrLen
	gsoSize := int(hdr.GSOSize)
	n := max(1, (payload+gsoSize-1)/gsoSize)
	if err := checkRoom(n, hdrLen, payload, gsoSize, out, sizes, offset); err != nil {
		return 0, err
	}
	for i := range n {
		start := hdrLen + i*gsoSize
		end := min(start+gsoSize, len(pkt))
		seg := out[i][offset : offset+hdrLen+end-start]
		copy(seg, pkt[:hdrLen])
		copy(seg[hdrLen:], pkt[start:end])
		fixSegment(seg, ip, i, n, i*gsoSize)
		sizes[i] = len(seg)
	}
	return n, nil
}

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

// ErrNoRoom says Split has fewer output buffers than the super-packet has
// segments: the caller can flush what it holds and call again with more.
// It is a plain sentinel so that this expected case allocates nothing.
var ErrNoRoom = errors.New("offload: more segments than output buffers")

func checkRoom(n, hdrLen, payload, gsoSize int, out [][]byte, sizes []int, offset int) error {
	if len(out) < n || len(sizes) < n {
		return ErrNoRoom
	}
	for i := range n {
		need := offset + hdrLen + min(gsoSize, payload-i*gsoSize)
		if len(out[i]) < need {
			return fmt.Errorf("offload: out[%d] has %d bytes, segment needs %d", i, len(out[i]), need)
		}
	}
	return nil
}

// fixSegment rewrites the headers of seg, segment i of n whose payload
// starts payloadOff bytes into the super-packet's payload.
func fixSegment(seg []byte, ip ipInfo, i, n, payloadOff int) {
	if !ip.v6 {
		id := binary.BigEndian.Uint16(seg[4:6]) + uint16(i)
		binary.BigEndian.PutUint16(seg[4:6], id)
	}
	setIPLength(seg, ip, len(seg)) // also the IPv4 header checksum
	l4 := seg[ip.l4Off:]
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
	} else {
		binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
	}
	src, dst := addrs(seg, ip)
	binary.BigEndian.PutUint16(l4[csumOff:], l4Checksum(l4, ip, csumOff, src, dst))
}

func splitNone(pkt []byte, hdr packet.VirtioNetHdr, out [][]byte, sizes []int, offset int) (int, error) {
	if len(out) < 1 || len(sizes) < 1 {
		return 0, errors.New("offload: no room for one packet")
	}
	if len(out[0]) < offset+len(pkt) {
		return 0, fmt.Errorf("offload: out[0] has %d bytes, packet needs %d", len(out[0]), offset+len(pkt))
	}
	if err := checkPartial(pkt, hdr); err != nil {
		return 0, err
	}
	dst := out[0][offset : offset+len(pkt)]
	copy(dst, pkt)
	completeChecksum(dst, hdr)
	sizes[0] = len(dst)
	return 1, nil
}

// CompleteChecksum finishes, in place, the checksum of a packet.GSONone packet read
// with packet.FlagNeedsCsum: the field at CsumStart+CsumOffset holds the folded
// pseudo-header sum, and the sum of everything from CsumStart on is added,
// exactly as the kernel's skb_checksum_help does. Without the flag it does
// nothing. It errors when the offsets point outside pkt.
func CompleteChecksum(pkt []byte, hdr packet.VirtioNetHdr) error {
	if err := checkPartial(pkt, hdr); err != nil {
		return err
	}
	completeChecksum(pkt, hdr)
	return nil
}

func checkPartial(pkt []byte, hdr packet.VirtioNetHdr) error {
	if hdr.Flags&packet.FlagNeedsCsum == 0 {
		return nil
	}
	if int(hdr.CsumStart)+int(hdr.CsumOffset)+2 > len(pkt) {
		return fmt.Errorf("offload: checksum at %d+%d past the end of a %d-byte packet",
			hdr.CsumStart, hdr.CsumOffset, len(pkt))
	}
	return nil
}

func completeChecksum(pkt []byte, hdr packet.VirtioNetHdr) {
	if hdr.Flags&packet.FlagNeedsCsum == 0 {
		return
	}
	start, at := int(hdr.CsumStart), int(hdr.CsumStart)+int(hdr.CsumOffset)
	c := packet.Checksum(pkt[start:], 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
}
