package packet

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// build serializes an IPv4 packet with gopacket, so the checksums under
// test are computed by an independent implementation.
func build(t testing.TB, ip layers.IPv4, payload []byte) []byte {
	t.Helper()
	ip.Version = 4
	if ip.TTL == 0 {
		ip.TTL = 64
	}
	if ip.SrcIP == nil {
		ip.SrcIP = net.IPv4(198, 18, 1, 2)
	}
	if ip.DstIP == nil {
		ip.DstIP = net.IPv4(198, 18, 2, 3)
	}
	if ip.Protocol == 0 {
		ip.Protocol = layers.IPProtocolUDP
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, &ip, gopacket.Payload(payload)); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// headerChecksumFromScratch recomputes the header checksum with the field
// zeroed, the way a sender would.
func headerChecksumFromScratch(b []byte) uint16 {
	hl := int(b[0]&0x0f) * 4
	h := append([]byte(nil), b[:hl]...)
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < hl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func udpPacket(t testing.TB, src, dst net.IP, ttl uint8, payloadLen int) []byte {
	return build(t, layers.IPv4{SrcIP: src, DstIP: dst, TTL: ttl, Protocol: layers.IPProtocolUDP}, make([]byte, payloadLen))
}
