package trace

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Test packets, serialized by gopacket with real lengths and checksums.

func ipv4(proto layers.IPProtocol, src, dst string) *layers.IPv4 {
	return &layers.IPv4{
		Version: 4, IHL: 5, TTL: 64, Id: 0x1234, Protocol: proto,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4(),
	}
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// tcpSYN is 60 bytes: 20 IP + 40 TCP (20 header + 20 options), like a
// Linux SYN.
func tcpSYN(tb testing.TB) []byte {
	ip := ipv4(layers.IPProtocolTCP, "198.18.1.2", "198.18.2.3")
	tcp := &layers.TCP{SrcPort: 43210, DstPort: 5201, SYN: true, Seq: 1, Window: 64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb, ip, tcp)
}

// echoReply is 84 bytes: 20 IP + 8 ICMP + 56 data, as ping sends.
func echoReply(tb testing.TB) []byte {
	ip := ipv4(layers.IPProtocolICMPv4, "198.18.2.3", "198.18.1.2")
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0), Id: 7, Seq: 1}
	return serialize(tb, ip, icmp, gopacket.Payload(make([]byte, 56)))
}

// dnsUDP is 40 bytes: 20 IP + 8 UDP + 12 payload.
func dnsUDP(tb testing.TB) []byte {
	ip := ipv4(layers.IPProtocolUDP, "198.18.9.9", "198.18.1.2")
	udp := &layers.UDP{SrcPort: 53, DstPort: 999}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb, ip, udp, gopacket.Payload(make([]byte, 12)))
}
