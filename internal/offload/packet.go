package offload

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/flannelu/flannelu/internal/packet"
)

// IP protocol numbers and header facts used by Split and the Coalescer.
const (
	protoTCP = 6
	protoUDP = 17

	tcpMinHdr = 20
	udpHdr    = 8

	tcpCsumOffset = 16
	udpCsumOffset = 6

	maxIPPacket = 65535 // IPv4 total length / IPv6 payload length are 16 bits
)

// TCP flag bits (byte 13 of the TCP header).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

var errFragment = errors.New("offload: packet is an IPv4 fragment")

// ipInfo locates the parts of an IP packet that offload arithmetic touches.
type ipInfo struct {
	v6       bool
	proto    uint8
	l4Off    int // offset of the TCP/UDP header
	src, dst []byte
}

// parseIP checks that pkt is one whole, unfragmented IPv4 or IPv6 packet
// whose length fields agree with len(pkt), and carrying its L4 header right
// after the IP header (IPv6 extension headers are not supported: nothing
// that generates offload packets emits them).
func parseIP(pkt []byte) (ipInfo, error) {
	if len(pkt) == 0 {
		return ipInfo{}, errors.New("offload: empty packet")
	}
	switch pkt[0] >> 4 {
	case 4:
		return parseIPv4(pkt)
	case 6:
		return parseIPv6(pkt)
	default:
		return ipInfo{}, fmt.Errorf("offload: IP version %d", pkt[0]>>4)
	}
}

func parseIPv4(pkt []byte) (ipInfo, error) {
	ip, err := packet.ParseIPv4NoChecksum(pkt)
	if err != nil {
		return ipInfo{}, fmt.Errorf("offload: %w", err)
	}
	if int(ip.TotalLen) != len(pkt) {
		return ipInfo{}, fmt.Errorf("offload: IPv4 total length %d, packet has %d bytes", ip.TotalLen, len(pkt))
	}
	if ip.MF || ip.FragOff != 0 {
		return ipInfo{}, errFragment
	}
	return ipInfo{proto: ip.Proto, l4Off: int(ip.HeaderLen), src: pkt[12:16], dst: pkt[16:20]}, nil
}

func parseIPv6(pkt []byte) (ipInfo, error) {
	ip, err := packet.ParseIPv6(pkt)
	if err != nil {
		return ipInfo{}, fmt.Errorf("offload: %w", err)
	}
	if ip.Len() != len(pkt) {
		return ipInfo{}, fmt.Errorf("offload: IPv6 packet declares %d bytes, has %d", ip.Len(), len(pkt))
	}
	if ip.NextHeader != protoTCP && ip.NextHeader != protoUDP {
		return ipInfo{}, fmt.Errorf("offload: IPv6 next header %d is not TCP or UDP", ip.NextHeader)
	}
	return ipInfo{v6: true, proto: ip.NextHeader, l4Off: packet.IPv6HeaderLen, src: pkt[8:24], dst: pkt[24:40]}, nil
}

// l4HdrLen returns the TCP or UDP header length of the packet described by ip.
func l4HdrLen(pkt []byte, ip ipInfo) (int, error) {
	rest := len(pkt) - ip.l4Off
	switch ip.proto {
	case protoTCP:
		if rest < tcpMinHdr {
			return 0, fmt.Errorf("offload: TCP header truncated (%d bytes)", rest)
		}
		n := int(pkt[ip.l4Off+12]>>4) * 4
		if n < tcpMinHdr || n > rest {
			return 0, fmt.Errorf("offload: TCP data offset %d with %d bytes left", n, rest)
		}
		return n, nil
	case protoUDP:
		if rest < udpHdr {
			return 0, fmt.Errorf("offload: UDP header truncated (%d bytes)", rest)
		}
		return udpHdr, nil
	default:
		return 0, fmt.Errorf("offload: IP protocol %d is not TCP or UDP", ip.proto)
	}
}

// setIPLength writes the length field of the IP header at the start of pkt
// for a packet of total bytes, and for IPv4 recomputes the header checksum.
func setIPLength(pkt []byte, ip ipInfo, total int) {
	if ip.v6 {
		binary.BigEndian.PutUint16(pkt[4:6], uint16(total-packet.IPv6HeaderLen))
		return
	}
	binary.BigEndian.PutUint16(pkt[2:4], uint16(total))
	setIPv4Checksum(pkt[:ip.l4Off])
}

func setIPv4Checksum(hdr []byte) {
	hdr[10], hdr[11] = 0, 0
	binary.BigEndian.PutUint16(hdr[10:12], packet.Checksum(hdr, 0))
}

// addrs returns the source and destination addresses inside pkt, which has
// the same IP header layout as the packet ip was parsed from.
func addrs(pkt []byte, ip ipInfo) (src, dst []byte) {
	if ip.v6 {
		return pkt[8:24], pkt[24:40]
	}
	return pkt[12:16], pkt[16:20]
}
