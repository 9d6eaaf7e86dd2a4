package packet

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestParseIPv4Fields(t *testing.T) {
	// Options NOP NOP NOP EOL make a 24-byte header.
	b := build(t, layers.IPv4{
		SrcIP: net.IPv4(198, 18, 7, 9), DstIP: net.IPv4(198, 19, 0, 1),
		TTL: 17, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment | layers.IPv4MoreFragments,
		FragOffset: 0, Id: 0x1234,
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}},
	}, make([]byte, 33))
	b = append(b, 0, 0, 0) // trailing padding is allowed
	p, err := ParseIPv4(b)
	if err != nil {
		t.Fatalf("ParseIPv4: %v", err)
	}
	want := IPv4{
		Src: [4]byte{198, 18, 7, 9}, Dst: [4]byte{198, 19, 0, 1},
		TotalLen: 24 + 33, FragOff: 0, HeaderLen: 24, Proto: 6, TTL: 17, DF: true, MF: true,
	}
	if p != want {
		t.Fatalf("got %+v\nwant %+v", p, want)
	}

	frag := build(t, layers.IPv4{FragOffset: 185}, make([]byte, 8))
	p, err = ParseIPv4(frag)
	if err != nil || p.FragOff != 185 || p.IsFirstFragment() || p.DF || p.MF {
		t.Fatalf("fragment: %+v, %v", p, err)
	}
}

func TestParseIPv4Rejects(t *testing.T) {
	good := udpPacket(t, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), 64, 12)
	mod := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	// fixSum rewrites the header checksum so only the intended defect remains.
	fixSum := func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[10:12], headerChecksumFromScratch(b))
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want ParseError
	}{
		{"empty", nil, ErrTooShort},
		{"19 bytes", good[:19], ErrTooShort},
		{"ipv6", mod(func(b []byte) []byte { b[0] = 0x65; return fixSum(b) }), ErrVersion},
		{"version 0", mod(func(b []byte) []byte { b[0] = 0x05; return fixSum(b) }), ErrVersion},
		{"ihl 4", mod(func(b []byte) []byte { b[0] = 0x44; return b }), ErrHeaderLen},
		{"ihl 0", mod(func(b []byte) []byte { b[0] = 0x40; return b }), ErrHeaderLen},
		{"ihl beyond buffer", mod(func(b []byte) []byte { b[0] = 0x4f; return b[:24] }), ErrTooShort},
		{"total below ihl", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return fixSum(b) }), ErrTotalLen},
		{"total above buffer", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(len(b)+1)); return fixSum(b) }), ErrTotalLen},
		{"truncated payload", good[:len(good)-1], ErrTotalLen},
		{"bad checksum", mod(func(b []byte) []byte { b[11] ^= 1; return b }), ErrHeaderChecksum},
		{"flipped address bit", mod(func(b []byte) []byte { b[19] ^= 0x80; return b }), ErrHeaderChecksum},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIPv4(tc.b)
			if err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var pe ParseError
			if !errors.As(err, &pe) || pe.Error() == "" {
				t.Fatalf("error %v is not a described ParseError", err)
			}
			// Without the checksum check only the checksum defects pass.
			p, err := ParseIPv4NoChecksum(tc.b)
			if tc.want == ErrHeaderChecksum {
				if err != nil || p.TotalLen != uint16(len(tc.b)) {
					t.Fatalf("ParseIPv4NoChecksum = %+v, %v; want the packet", p, err)
				}
			} else if err != tc.want {
				t.Fatalf("ParseIPv4NoChecksum err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := ParseIPv4(good); err != nil {
		t.Fatalf("unmodified packet rejected: %v", err)
	}
}

// TestChecksumMatchesGopacket checks Checksum against gopacket's header
// checksum for headers of every option length and many field values.
func TestChecksumMatchesGopacket(t *testing.T) {
	for i := 0; i < 2000; i++ {
		var opts []layers.IPv4Option
		for j := 0; j < i%10; j++ {
			opts = append(opts, layers.IPv4Option{OptionType: 1})
		}
		b := build(t, layers.IPv4{
			Id: uint16(i * 7919), TTL: uint8(i%255 + 1), TOS: uint8(i),
			SrcIP: net.IPv4(198, 18, byte(i), byte(i>>8)), DstIP: net.IPv4(203, 0, 113, byte(i*3)),
			Options: opts,
		}, make([]byte, i%5))
		hl := int(b[0]&0x0f) * 4
		want := binary.BigEndian.Uint16(b[10:12]) // gopacket's
		h := append([]byte(nil), b[:hl]...)
		h[10], h[11] = 0, 0
		if got := Checksum(h, 0); got != want {
			t.Fatalf("packet %d: Checksum = %#04x, gopacket = %#04x", i, got, want)
		}
		if got := Checksum(b[:hl], 0); got != 0 {
			t.Fatalf("packet %d: checksum over a correct header = %#04x, want 0", i, got)
		}
	}
	// Odd length: the last byte is padded with a zero low byte (RFC 1071).
	if got, want := Checksum([]byte{0x12, 0x34, 0x56}, 0), ^uint16(0x1234+0x5600); got != want {
		t.Fatalf("odd length: %#04x, want %#04x", got, want)
	}
}

func TestDecrementTTL(t *testing.T) {
	for _, ttl := range []uint8{255, 128, 64, 2} {
		b := udpPacket(t, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), ttl, 10)
		if !DecrementTTL(b) {
			t.Fatalf("ttl %d: DecrementTTL = false", ttl)
		}
		checkDecremented(t, b, ttl)
	}
	for _, ttl := range []uint8{1, 0} {
		b := udpPacket(t, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), 64, 10)
		b[8] = ttl
		binary.BigEndian.PutUint16(b[10:12], headerChecksumFromScratch(b))
		before := append([]byte(nil), b...)
		if DecrementTTL(b) {
			t.Fatalf("ttl %d: DecrementTTL = true, want false", ttl)
		}
		if string(b) != string(before) {
			t.Fatalf("ttl %d: packet modified on refusal", ttl)
		}
	}
	if DecrementTTL(make([]byte, 19)) {
		t.Fatal("DecrementTTL on 19 bytes = true")
	}
}

func checkDecremented(t *testing.T, b []byte, oldTTL uint8) {
	t.Helper()
	if b[8] != oldTTL-1 {
		t.Fatalf("TTL = %d, want %d", b[8], oldTTL-1)
	}
	got := binary.BigEndian.Uint16(b[10:12])
	if want := headerChecksumFromScratch(b); got != want {
		t.Fatalf("incremental checksum %#04x, full recompute %#04x", got, want)
	}
	if _, err := ParseIPv4(b); err != nil {
		t.Fatalf("decremented packet no longer parses: %v", err)
	}
	// gopacket must agree the checksum is right.
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil || ip.TTL != oldTTL-1 {
		t.Fatalf("gopacket decode: %v", pkt.ErrorLayer())
	}
}

// TestDecrementTTLChecksumEdges covers the ones' complement corner cases:
// a header whose checksum is 0x0000 (whose sum is 0xFFFF), the same header
// carrying the equivalent non-canonical 0xFFFF, and a header whose
// checksum after the decrement is 0x0000, where RFC 1141's shortcut would
// produce 0xFFFF.
func TestDecrementTTLChecksumEdges(t *testing.T) {
	base := udpPacket(t, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), 64, 0)
	findID := func(pred func(b []byte) bool) []byte {
		for id := 0; id <= 0xffff; id++ {
			b := append([]byte(nil), base...)
			binary.BigEndian.PutUint16(b[4:6], uint16(id))
			binary.BigEndian.PutUint16(b[10:12], headerChecksumFromScratch(b))
			if pred(b) {
				return b
			}
		}
		t.Fatal("no ID gives the wanted checksum")
		return nil
	}
	zeroBefore := findID(func(b []byte) bool { return b[10] == 0 && b[11] == 0 })
	zeroAfter := findID(func(b []byte) bool {
		c := append([]byte(nil), b...)
		c[8]--
		return headerChecksumFromScratch(c) == 0
	})
	nonCanonical := append([]byte(nil), zeroBefore...)
	nonCanonical[10], nonCanonical[11] = 0xff, 0xff

	for name, b := range map[string][]byte{"checksum 0x0000": zeroBefore, "checksum 0xFFFF": nonCanonical, "result 0x0000": zeroAfter} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseIPv4(b); err != nil {
				t.Fatalf("edge packet does not parse: %v", err)
			}
			if !DecrementTTL(b) {
				t.Fatal("DecrementTTL = false")
			}
			checkDecremented(t, b, 64)
		})
	}
	if zeroAfter[10] != 0 || zeroAfter[11] != 0 {
		t.Fatalf("result 0x0000 case produced %#02x%02x", zeroAfter[10], zeroAfter[11])
	}
}

func TestParseAndDecrementAllocateNothing(t *testing.T) {
	orig := udpPacket(t, net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 2, 2), 255, 100)
	b := append([]byte(nil), orig...)
	var sinkAddr netip.Addr
	var sinkErr error
	allocs := testing.AllocsPerRun(1000, func() {
		copy(b, orig)
		p, err := ParseIPv4(b)
		if err != nil || !DecrementTTL(b) {
			panic("valid packet refused")
		}
		sinkAddr = p.DstAddr()
		_, sinkErr = ParseIPv4(b[:3]) // the error path too
	})
	if sinkErr == nil || sinkAddr != netip.MustParseAddr("198.18.2.2") {
		t.Fatalf("unexpected results %v %v", sinkAddr, sinkErr)
	}
	if allocs != 0 {
		t.Fatalf("ParseIPv4+DecrementTTL: %v allocs per packet, want 0", allocs)
	}
}
