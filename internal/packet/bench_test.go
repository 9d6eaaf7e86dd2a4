package packet

import (
	"net"
	"strconv"
	"testing"
)

// BenchmarkChecksum covers an IPv4 header (the forwarder verifies one per
// packet), a full-size packet and the largest super-packet.
func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 1500, 65535} {
		data := pattern(n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var sink uint16
			for b.Loop() {
				sink += Checksum(data, 0)
			}
			_ = sink
		})
	}
}

// BenchmarkParseDecrement is the per-packet header work of one forwarder
// direction: validate, then decrement the TTL. Before the TTL runs out, TTL
// and checksum are restored from the original so every round decrements.
func BenchmarkParseDecrement(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(sizeName(size), func(b *testing.B) {
			orig := udpPacket(b, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), 255, size-28)
			pkt := append([]byte(nil), orig...)
			b.ReportAllocs()
			for b.Loop() {
				if pkt[8] < 2 {
					copy(pkt[8:12], orig[8:12]) // TTL and checksum back to 255
				}
				if _, err := ParseIPv4(pkt); err != nil {
					b.Fatal(err)
				}
				DecrementTTL(pkt)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

func BenchmarkDestUnreachable(b *testing.B) {
	orig := udpPacket(b, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), 64, 1372)
	dst := make([]byte, 1500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DestUnreachable(dst, orig, [4]byte{198, 18, 2, 2}, CodeFragNeeded, 1400); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

func sizeName(n int) string {
	if n < 100 {
		return "64B"
	}
	return "1400B"
}
