package offload

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

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
	lengths := []int{0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 63, 64, 65, 1499, 1500, 65535}
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

func TestPseudoSumMatchesHandBuiltHeader(t *testing.T) {
	p4 := build(t, spec{payload: pattern(100)})
	if got, want := Fold(PseudoSum(protoTCP, p4[12:16], p4[16:20], len(p4)-20)), partialSum(p4, false, 20); got != want {
		t.Fatalf("IPv4 pseudo sum %#04x, want %#04x", got, want)
	}
	p6 := build(t, spec{v6: true, udp: true, payload: pattern(333)})
	if got, want := Fold(PseudoSum(protoUDP, p6[8:24], p6[24:40], len(p6)-40)), partialSum(p6, true, 40); got != want {
		t.Fatalf("IPv6 pseudo sum %#04x, want %#04x", got, want)
	}
}

func TestUpdateChecksumMatchesRecompute(t *testing.T) {
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
		// A 32-bit word (the source address) changes.
		old32, new32 := binary.BigEndian.Uint32(h[12:]), r.Uint32()
		binary.BigEndian.PutUint32(h[12:], new32)
		inc = UpdateChecksum32(binary.BigEndian.Uint16(h[10:]), old32, new32)
		binary.BigEndian.PutUint16(h[10:], inc)
		if Checksum(h, 0) != 0 {
			t.Fatalf("UpdateChecksum32 gave %#04x, header no longer verifies", inc)
		}
	}
}

func TestChecksumDoesNotAllocate(t *testing.T) {
	b := pattern(1500)
	if n := testing.AllocsPerRun(100, func() { _ = Checksum(b, 0) }); n != 0 {
		t.Fatalf("Checksum allocates %.1f times", n)
	}
}
