package packet

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

func seedPackets(f *testing.F) [][]byte {
	podA, podB := net.IPv4(198, 18, 40, 5), net.IPv4(198, 18, 77, 9)
	return [][]byte{
		udpPacket(f, podA, podB, 64, 0),
		udpPacket(f, podA, podB, 2, 100),
		udpPacket(f, podA, podB, 1, 8),
		build(f, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolICMPv4}, []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0}),
		build(f, layers.IPv4{SrcIP: podA, DstIP: podB, Protocol: layers.IPProtocolICMPv4}, []byte{3, 0, 0, 0, 0, 0, 0, 0}),
		build(f, layers.IPv4{SrcIP: podA, DstIP: podB, FragOffset: 3, Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 0}}}, make([]byte, 16)),
		{0x45, 0, 0, 20},
		nil,
	}
}

// FuzzParseIPv4: never panics, an accepted packet really satisfies every
// documented check, and ParseIPv4NoChecksum differs only in the checksum.
func FuzzParseIPv4(f *testing.F) {
	for _, b := range seedPackets(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseIPv4(b)
		q, qerr := ParseIPv4NoChecksum(b)
		if err == ErrHeaderChecksum && qerr != nil || err != ErrHeaderChecksum && (qerr != err || q != p) {
			t.Fatalf("ParseIPv4 = %+v, %v; ParseIPv4NoChecksum = %+v, %v", p, err, q, qerr)
		}
		if err != nil {
			if _, ok := err.(ParseError); !ok {
				t.Fatalf("error %T is not a ParseError", err)
			}
			return
		}
		hl := int(b[0]&0x0f) * 4
		if b[0]>>4 != 4 || hl < 20 || int(p.HeaderLen) != hl || int(p.TotalLen) < hl || int(p.TotalLen) > len(b) {
			t.Fatalf("accepted an invalid header: %+v", p)
		}
		if headerChecksumFromScratch(b) != binary.BigEndian.Uint16(b[10:12]) && !(b[10] == 0xff && b[11] == 0xff) {
			t.Fatal("accepted a bad checksum")
		}
		if p.Src != [4]byte(b[12:16]) || p.Dst != [4]byte(b[16:20]) || p.TTL != b[8] || p.Proto != b[9] {
			t.Fatalf("fields do not match the bytes: %+v", p)
		}
	})
}

// FuzzDecrementTTL: on any packet that parses, DecrementTTL either refuses
// (TTL <= 1) without touching it, or lowers the TTL by one, leaves every
// other byte but the checksum alone, and the checksum equals a full
// recompute.
func FuzzDecrementTTL(f *testing.F) {
	for _, b := range seedPackets(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseIPv4(b); err != nil {
			if DecrementTTL(b) && len(b) < 20 {
				t.Fatal("decremented a buffer shorter than a header")
			}
			return
		}
		before := append([]byte(nil), b...)
		ok := DecrementTTL(b)
		if !ok {
			if before[8] > 1 || !bytes.Equal(b, before) {
				t.Fatalf("refused TTL %d or modified the packet", before[8])
			}
			return
		}
		if b[8] != before[8]-1 {
			t.Fatalf("TTL %d -> %d", before[8], b[8])
		}
		if got, want := binary.BigEndian.Uint16(b[10:12]), headerChecksumFromScratch(b); got != want {
			t.Fatalf("checksum %#04x, full recompute %#04x", got, want)
		}
		if !bytes.Equal(b[:8], before[:8]) || b[9] != before[9] || !bytes.Equal(b[12:], before[12:]) {
			t.Fatal("bytes other than TTL and checksum changed")
		}
		if _, err := ParseIPv4(b); err != nil {
			t.Fatalf("no longer parses: %v", err)
		}
	})
}

// FuzzDestUnreachable: never panics for any original, code, MTU or buffer
// size, and whatever it writes is a valid IPv4 ICMP packet of <= 576 bytes
// addressed back to the original's source.
func FuzzDestUnreachable(f *testing.F) {
	for i, b := range seedPackets(f) {
		f.Add(b, uint8(i%5), uint16(1400), uint16(600))
	}
	f.Fuzz(func(t *testing.T, orig []byte, code uint8, mtu uint16, dstLen uint16) {
		dst := make([]byte, int(dstLen)%2000)
		n, err := DestUnreachable(dst, orig, [4]byte{198, 18, 0, 1}, code, mtu)
		if err != nil {
			if n != 0 {
				t.Fatalf("n = %d with error %v", n, err)
			}
			return
		}
		out := dst[:n]
		p, err := ParseIPv4(out)
		if err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		o, _ := ParseIPv4(orig)
		if n > MaxICMPErrorLen || int(p.TotalLen) != n || p.Proto != 1 || p.TTL != 64 || p.Dst != o.Src {
			t.Fatalf("bad answer header %+v (n %d)", p, n)
		}
		if Checksum(out[20:], 0) != 0 || out[20] != 3 || out[21] != code {
			t.Fatal("bad ICMP header or checksum")
		}
		if !bytes.Equal(out[28:], orig[:n-28]) {
			t.Fatal("quote is not a prefix of the original")
		}
	})
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff}, uint16(0xffff))
	f.Add(pattern(1500), uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, initial uint16) {
		// initial as a leading word keeps the data's word alignment.
		ref := refChecksum(append([]byte{byte(initial >> 8), byte(initial)}, b...))
		if got := Checksum(b, uint64(initial)); got != ref {
			t.Fatalf("Checksum = %#04x, reference %#04x", got, ref)
		}
	})
}
