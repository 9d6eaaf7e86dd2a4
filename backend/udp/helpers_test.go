package udp

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// innerPacket is a valid IPv4/UDP packet of size bytes from src to dst,
// TTL 64, as a pod would send it.
func innerPacket(t testing.TB, src, dst string, size int) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 7777}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(make([]byte, size-28))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// innerPacket6 is a valid IPv6/UDP packet of size bytes from src to dst,
// hop limit 64, as a pod would send it.
func innerPacket6(t testing.TB, src, dst string, size int) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 7777}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(make([]byte, size-48))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
