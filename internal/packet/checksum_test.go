package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// refChecksum is RFC 1071 the slow, obvious way: 16-bit words into a 32-bit
// accumulator, carries folded at the end.
func refChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestChecksumRFC1071Example(t *testing.T) {
	// RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Fold(Sum(b, 0)); got != 0xddf2 {
		t.Fatalf("Fold(Sum) = %#04x, want 0xddf2", got)
	}
	if got := Checksum(b, 0); got != ^uint16(0xddf2) {
		t.Fatalf("Checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	lengths := []int{0, 1, 2, 3, 7, 8, 9, 20, 31, 32, 33, 63, 64, 65, 1499, 1500, 65535}
	for range 300 {
		lengths = append(lengths, r.IntN(300))
	}
	for _, n := range lengths {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n%5 == 0 { // all-ones data drives the carry chain hardest
			for i := range b {
				b[i] = 0xff
			}
		}
		if got, want := Checksum(b, 0), refChecksum(b); got != want {
			t.Fatalf("len %d: Checksum = %#04x, reference %#04x", n, got, want)
		}
	}
}

func TestSumChainsLikeConcatenation(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		a := make([]byte, 2*r.IntN(100)) // even split keeps word alignment
		b := make([]byte, r.IntN(100))
		for i := range a {
			a[i] = byte(r.Uint32())
		}
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		whole := append(append([]byte(nil), a...), b...)
		if got, want := Checksum(b, Sum(a, 0)), refChecksum(whole); got != want {
			t.Fatalf("chained %#04x, whole %#04x", got, want)
		}
	}
}

// TestPseudoSumVerifiesGopacketUDP checks PseudoSum against UDP checksums
// computed by gopacket, over IPv4 and IPv6.
func TestPseudoSumVerifiesGopacketUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		var ip gopacket.NetworkLayer
		var src, dst net.IP
		l4Off := HeaderLen
		if v6 {
			src, dst = net.ParseIP("2001:db8:100::1"), net.ParseIP("2001:db8:100::2")
			ip = &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64, SrcIP: src, DstIP: dst}
			l4Off = 40
		} else {
			src, dst = net.IPv4(198, 18, 1, 2).To4(), net.IPv4(198, 18, 2, 3).To4()
			ip = &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
		}
		udp := &layers.UDP{SrcPort: 4000, DstPort: 53}
		_ = udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
		if err := gopacket.SerializeLayers(buf, opts, ip.(gopacket.SerializableLayer), udp, gopacket.Payload(pattern(333))); err != nil {
			t.Fatal(err)
		}
		l4 := buf.Bytes()[l4Off:]
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			t.Fatal("gopacket wrote no UDP checksum")
		}
		if got := Checksum(l4, PseudoSum(17, src, dst, len(l4))); got != 0 {
			t.Fatalf("v6=%v: UDP checksum over gopacket's segment = %#04x, want 0", v6, got)
		}
	}
}

func TestUpdateChecksum16MatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		h := make([]byte, 20)
		for i := range h {
			h[i] = byte(r.Uint32())
		}
		binary.BigEndian.PutUint16(h[10:], 0)
		binary.BigEndian.PutUint16(h[10:], Checksum(h, 0))
		// A 16-bit word (e.g. TTL+protocol) changes.
		old16, new16 := binary.BigEndian.Uint16(h[8:]), uint16(r.Uint32())
		binary.BigEndian.PutUint16(h[8:], new16)
		inc := UpdateChecksum16(binary.BigEndian.Uint16(h[10:]), old16, new16)
		binary.BigEndian.PutUint16(h[10:], inc)
		if Checksum(h, 0) != 0 {
			t.Fatalf("UpdateChecksum16 gave %#04x, header no longer verifies", inc)
		}
	}
}

func TestChecksumDoesNotAllocate(t *testing.T) {
	b := pattern(1500)
	if n := testing.AllocsPerRun(100, func() { _ = Checksum(b, 0) }); n != 0 {
		t.Fatalf("Checksum allocates %.1f times", n)
	}
}
