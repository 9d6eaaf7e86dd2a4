package packet

import (
	"bytes"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	pod6A = net.ParseIP("2001:db8:100:1::5")
	pod6B = net.ParseIP("2001:db8:100:2::9")
)

// build6 serializes an IPv6 packet with gopacket (an independent
// implementation).
// NextHeader is taken as given: 0 is hop-by-hop options.
func build6(t testing.TB, ip layers.IPv6, payload []byte) []byte {
	t.Helper()
	ip.Version = 6
	if ip.HopLimit == 0 {
		ip.HopLimit = 64
	}
	if ip.SrcIP == nil {
		ip.SrcIP = pod6A
	}
	if ip.DstIP == nil {
		ip.DstIP = pod6B
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, &ip, gopacket.Payload(payload)); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func udp6Packet(t testing.TB, src, dst net.IP, hops uint8, payloadLen int) []byte {
	return build6(t, layers.IPv6{SrcIP: src, DstIP: dst, HopLimit: hops, NextHeader: layers.IPProtocolUDP}, make([]byte, payloadLen))
}

// icmp6Packet is an ICMPv6 message of type typ (its checksum is not
// filled: the forwarder never verifies it).
func icmp6Packet(t testing.TB, typ uint8) []byte {
	return build6(t, layers.IPv6{NextHeader: layers.IPProtocolICMPv6}, []byte{typ, 0, 0, 0, 0, 0, 0, 0})
}

// fragment6 is an IPv6 packet with a fragment header at offset off (in
// 8-byte units) carrying next-header nh.
func fragment6(t testing.TB, off uint16, nh layers.IPProtocol, payload []byte) []byte {
	frag := []byte{byte(nh), 0, byte(off >> 5), byte(off << 3), 0, 0, 0, 1}
	return build6(t, layers.IPv6{NextHeader: layers.IPProtocolIPv6Fragment}, append(frag, payload...))
}

func TestParseIPv6(t *testing.T) {
	b := udp6Packet(t, pod6A, pod6B, 17, 100)
	p, err := ParseIPv6(append(b, 0xee, 0xee)) // padding is allowed
	if err != nil {
		t.Fatalf("ParseIPv6: %v", err)
	}
	if p.SrcAddr().String() != "2001:db8:100:1::5" || p.DstAddr().String() != "2001:db8:100:2::9" ||
		p.HopLimit != 17 || p.NextHeader != 17 || p.PayloadLen != 100 || p.Len() != len(b) {
		t.Fatalf("ParseIPv6 = %+v", p)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"39 bytes", b[:39], ErrIPv6TooShort},
		{"IPv4", udpPacket(t, podA, podB, 64, 40), ErrIPv6Version},
		{"cut payload", b[:len(b)-1], ErrIPv6PayloadLen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseIPv6(tc.b); err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if ErrIPv6PayloadLen.Error() != "ipv6: payload length beyond the buffer" || ErrVersion.Error() != "ipv4: version is not 4" {
		t.Fatal("error strings")
	}
}

func TestDecrementHopLimit(t *testing.T) {
	b := udp6Packet(t, pod6A, pod6B, 2, 10)
	before := append([]byte(nil), b...)
	if !DecrementHopLimit(b) || b[7] != 1 || !bytes.Equal(b[:7], before[:7]) || !bytes.Equal(b[8:], before[8:]) {
		t.Fatalf("first decrement: hop limit %d", b[7])
	}
	if DecrementHopLimit(b) || b[7] != 1 {
		t.Fatal("decremented hop limit 1")
	}
	if DecrementHopLimit(b[:39]) {
		t.Fatal("decremented a short buffer")
	}
}

func TestShouldAnswer6(t *testing.T) {
	from := func(a string) []byte { return udp6Packet(t, net.ParseIP(a), pod6B, 64, 8) }
	to := func(a string) []byte { return udp6Packet(t, pod6A, net.ParseIP(a), 64, 8) }
	hopByHopICMP := func(typ uint8) []byte {
		hbh := []byte{58, 0, 1, 4, 0, 0, 0, 0} // next ICMPv6, 8 bytes, PadN
		return build6(t, layers.IPv6{NextHeader: layers.IPProtocolIPv6HopByHop}, append(hbh, typ, 0, 0, 0, 0, 0, 0, 0))
	}
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"udp unicast", from("2001:db8:100:1::5"), true},
		{"echo request", icmp6Packet(t, 128), true},
		{"echo reply", icmp6Packet(t, 129), true},
		{"dest unreachable", icmp6Packet(t, 1), false},
		{"packet too big", icmp6Packet(t, 2), false},
		{"time exceeded", icmp6Packet(t, 3), false},
		{"unknown error type 100", icmp6Packet(t, 100), false},
		{"icmpv6 without payload", build6(t, layers.IPv6{NextHeader: layers.IPProtocolICMPv6}, nil), false},
		{"hop-by-hop then echo request", hopByHopICMP(128), true},
		{"hop-by-hop then dest unreachable", hopByHopICMP(1), false},
		{"first fragment of udp", fragment6(t, 0, layers.IPProtocolUDP, make([]byte, 16)), true},
		{"first fragment of an icmpv6 error", fragment6(t, 0, layers.IPProtocolICMPv6, []byte{1, 0, 0, 0, 0, 0, 0, 0}), false},
		{"non-first fragment", fragment6(t, 3, layers.IPProtocolUDP, make([]byte, 16)), false},
		{"cut extension header", build6(t, layers.IPv6{NextHeader: layers.IPProtocolIPv6HopByHop}, []byte{58, 0, 0}), false},
		{"source ::", from("::"), false},
		{"source ::1", from("::1"), false},
		{"source multicast", from("ff02::1"), false},
		{"dest multicast", to("ff02::1"), false},
		{"underlay source", from("2001:db8:0:1::7"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseIPv6(tc.b)
			if err != nil {
				t.Fatalf("test packet does not parse: %v", err)
			}
			if got := ShouldAnswer6(p, tc.b); got != tc.want {
				t.Fatalf("ShouldAnswer6 = %v, want %v", got, tc.want)
			}
		})
	}
	// A chain of nine destination-options headers is too long to follow.
	chain := make([]byte, 0, 80)
	for i := 0; i < 9; i++ {
		chain = append(chain, 60, 0, 1, 4, 0, 0, 0, 0)
	}
	chain[len(chain)-8] = 17
	long := build6(t, layers.IPv6{NextHeader: layers.IPProtocolIPv6Destination}, append(chain, make([]byte, 8)...))
	if p, _ := ParseIPv6(long); ShouldAnswer6(p, long) {
		t.Fatal("answered a chain of 9 extension headers")
	}
}

// BenchmarkParseDecrement6 is BenchmarkParseDecrement's per-packet header
// work for IPv6: validate, then decrement the hop limit.
func BenchmarkParseDecrement6(b *testing.B) {
	pkt := udp6Packet(b, pod6A, pod6B, 255, 1400-48)
	b.ReportAllocs()
	for b.Loop() {
		if pkt[7] < 2 {
			pkt[7] = 255
		}
		if _, err := ParseIPv6(pkt); err != nil {
			b.Fatal(err)
		}
		DecrementHopLimit(pkt)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}
