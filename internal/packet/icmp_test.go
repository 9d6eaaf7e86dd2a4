package packet

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	podA    = net.IPv4(198, 18, 40, 5).To4()
	podB    = net.IPv4(198, 18, 77, 9).To4()
	answerS = [4]byte{198, 18, 77, 9} // the forwarder answers from orig's destination
)

// decodeICMP decodes an answer with gopacket and checks both checksums.
func decodeICMP(t *testing.T, b []byte) (*layers.IPv4, *layers.ICMPv4) {
	t.Helper()
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil {
		t.Fatalf("answer is not IPv4+ICMPv4: %v", pkt)
	}
	if headerChecksumFromScratch(b) != ip.Checksum {
		t.Fatalf("outer IPv4 checksum %#04x is wrong", ip.Checksum)
	}
	if Checksum(b[20:ip.Length], 0) != 0 {
		t.Fatalf("ICMP checksum %#04x is wrong", icmp.Checksum)
	}
	return ip, icmp
}

func TestDestUnreachable(t *testing.T) {
	orig := udpPacket(t, podA, podB, 63, 100)
	tests := []struct {
		name    string
		code    uint8
		mtu     uint16
		wantMTU uint16
	}{
		{"net unreachable", CodeNetUnreachable, 1400, 0},
		{"frag needed", CodeFragNeeded, 1472, 1472},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]byte, 2048)
			n, err := DestUnreachable(dst, orig, answerS, tc.code, tc.mtu)
			if err != nil {
				t.Fatalf("DestUnreachable: %v", err)
			}
			if want := 20 + 8 + len(orig); n != want {
				t.Fatalf("n = %d, want %d", n, want)
			}
			ip, icmp := decodeICMP(t, dst[:n])
			if !ip.SrcIP.Equal(podB) || !ip.DstIP.Equal(podA) || ip.TTL != 64 || ip.Protocol != layers.IPProtocolICMPv4 || int(ip.Length) != n {
				t.Fatalf("outer header %v -> %v ttl %d proto %v len %d", ip.SrcIP, ip.DstIP, ip.TTL, ip.Protocol, ip.Length)
			}
			if icmp.TypeCode != layers.CreateICMPv4TypeCode(3, tc.code) {
				t.Fatalf("type/code = %v", icmp.TypeCode)
			}
			// gopacket reads the rest-of-header as Id (unused) and Seq (next-hop MTU).
			if icmp.Seq != tc.wantMTU || icmp.Id != 0 {
				t.Fatalf("next-hop MTU = %d (unused %d), want %d", icmp.Seq, icmp.Id, tc.wantMTU)
			}
			if string(icmp.Payload) != string(orig) {
				t.Fatal("quote differs from the original packet")
			}
		})
	}
}

func TestTimeExceeded(t *testing.T) {
	orig := udpPacket(t, podA, podB, 1, 40)
	dst := make([]byte, 600)
	n, err := TimeExceeded(dst, orig, answerS)
	if err != nil {
		t.Fatalf("TimeExceeded: %v", err)
	}
	ip, icmp := decodeICMP(t, dst[:n])
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(11, 0) || !ip.DstIP.Equal(podA) {
		t.Fatalf("got %v to %v", icmp.TypeCode, ip.DstIP)
	}
	quoted := gopacket.NewPacket(icmp.Payload, layers.LayerTypeIPv4, gopacket.Default)
	qip, _ := quoted.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if qip == nil || !qip.SrcIP.Equal(podA) || !qip.DstIP.Equal(podB) || qip.TTL != 1 {
		t.Fatalf("quoted header does not decode as the original: %v", quoted)
	}
}

func TestICMPQuoteLimits(t *testing.T) {
	big := udpPacket(t, podA, podB, 64, 1400)
	dst := make([]byte, 2000)
	n, err := DestUnreachable(dst, big, answerS, CodeFragNeeded, 1400)
	if err != nil || n != MaxICMPErrorLen {
		t.Fatalf("big original: n = %d, %v; want %d", n, err, MaxICMPErrorLen)
	}
	_, icmp := decodeICMP(t, dst[:n])
	if string(icmp.Payload) != string(big[:MaxICMPErrorLen-28]) {
		t.Fatal("quote is not the original's first 548 bytes")
	}

	// Padding after the original's total length is not quoted.
	padded := append(udpPacket(t, podA, podB, 64, 10), 0xee, 0xee)
	n, err = DestUnreachable(dst, padded, answerS, 0, 0)
	if err != nil || n != 28+len(padded)-2 {
		t.Fatalf("padded original: n = %d, %v", n, err)
	}

	// A small dst still gets header + 8 bytes; one byte less is refused.
	small := make([]byte, 28+20+8)
	if n, err = DestUnreachable(small, big, answerS, 0, 0); err != nil || n != len(small) {
		t.Fatalf("minimal dst: n = %d, %v", n, err)
	}
	decodeICMP(t, small[:n])
	if _, err = DestUnreachable(small[:len(small)-1], big, answerS, 0, 0); err != ErrShortBuffer {
		t.Fatalf("dst too small: err = %v, want ErrShortBuffer", err)
	}
	if _, err = TimeExceeded(nil, big, answerS); err != ErrShortBuffer {
		t.Fatalf("nil dst: err = %v, want ErrShortBuffer", err)
	}
}

func TestICMPRefusals(t *testing.T) {
	dst := make([]byte, 600)
	good := udpPacket(t, podA, podB, 64, 10)
	echoReq := build(t, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolICMPv4}, []byte{8, 0, 0, 0, 0, 0, 0, 0})
	tests := []struct {
		name string
		orig []byte
		code uint8
		mtu  uint16
		want error
	}{
		{"malformed original", good[:10], 0, 0, ErrMalformedOriginal},
		{"icmp error original", build(t, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolICMPv4}, []byte{3, 1, 0, 0, 0, 0, 0, 0}), 0, 0, ErrMustNotAnswer},
		{"code 16", good, 16, 0, ErrBadCode},
		{"frag needed mtu 67", good, CodeFragNeeded, 67, ErrBadMTU},
		{"frag needed mtu 0", good, CodeFragNeeded, 0, ErrBadMTU},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := DestUnreachable(dst, tc.orig, answerS, tc.code, tc.mtu)
			if err != tc.want || n != 0 {
				t.Fatalf("n = %d, err = %v; want 0, %v", n, err, tc.want)
			}
		})
	}
	// An echo request is answered (ICMP informational messages are fine).
	if n, err := DestUnreachable(dst, echoReq, answerS, 0, 0); err != nil || n == 0 {
		t.Fatalf("echo request original: %d, %v", n, err)
	}
}

func TestShouldAnswer(t *testing.T) {
	icmp := func(typ uint8) []byte {
		return build(t, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolICMPv4}, []byte{typ, 0, 0, 0, 0, 0, 0, 0})
	}
	from := func(a net.IP) []byte { return udpPacket(t, a, podB, 64, 8) }
	to := func(a net.IP) []byte { return udpPacket(t, podA, a, 64, 8) }
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"udp unicast", from(podA), true},
		{"tcp first fragment", build(t, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4MoreFragments}, make([]byte, 24)), true},
		{"non-first fragment", build(t, layers.IPv4{SrcIP: podA, DstIP: podB, FragOffset: 1}, make([]byte, 8)), false},
		{"icmp echo request", icmp(8), true},
		{"icmp echo reply", icmp(0), true},
		{"icmp dest unreachable", icmp(3), false},
		{"icmp source quench", icmp(4), false},
		{"icmp redirect", icmp(5), false},
		{"icmp time exceeded", icmp(11), false},
		{"icmp parameter problem", icmp(12), false},
		{"icmp unknown type 42", icmp(42), false},
		{"icmp without payload", build(t, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolICMPv4}, nil), false},
		{"source 0.0.0.0", from(net.IPv4(0, 0, 0, 0)), false},
		{"source 255.255.255.255", from(net.IPv4(255, 255, 255, 255)), false},
		{"source multicast", from(net.IPv4(224, 0, 0, 251)), false},
		{"source loopback", from(net.IPv4(127, 0, 0, 1)), false},
		{"source class E", from(net.IPv4(240, 1, 2, 3)), false},
		{"dest multicast", to(net.IPv4(239, 1, 1, 1)), false},
		{"dest broadcast", to(net.IPv4(255, 255, 255, 255)), false},
		{"underlay source", from(net.IPv4(192, 0, 2, 7)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseIPv4(tc.b)
			if err != nil {
				t.Fatalf("test packet does not parse: %v", err)
			}
			if got := ShouldAnswer(p, tc.b); got != tc.want {
				t.Fatalf("ShouldAnswer = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestICMPAllocatesNothing(t *testing.T) {
	orig := udpPacket(t, podA, podB, 64, 1400)
	dst := make([]byte, 1500)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := DestUnreachable(dst, orig, answerS, CodeFragNeeded, 1400); err != nil {
			panic(err)
		}
		if _, err := TimeExceeded(dst, orig, answerS); err != nil {
			panic(err)
		}
		if _, err := DestUnreachable(dst[:10], orig, answerS, 0, 0); err == nil {
			panic("short buffer accepted")
		}
	})
	if allocs != 0 {
		t.Fatalf("ICMP generation: %v allocs, want 0", allocs)
	}
	if binary.BigEndian.Uint16(dst[2:4]) != MaxICMPErrorLen {
		t.Fatal("last answer has the wrong length")
	}
}
