package packet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

func seedPackets6(f *testing.F) [][]byte {
	return [][]byte{
		udp6Packet(f, pod6A, pod6B, 64, 0),
		udp6Packet(f, pod6A, pod6B, 1, 100),
		icmp6Packet(f, 128),
		icmp6Packet(f, 1),
		fragment6(f, 0, layers.IPProtocolICMPv6, []byte{128, 0, 0, 0}),
		fragment6(f, 9, layers.IPProtocolUDP, make([]byte, 8)),
		build6(f, layers.IPv6{NextHeader: layers.IPProtocolIPv6HopByHop}, []byte{58, 0, 1, 4, 0, 0, 0, 0, 128, 0, 0, 0}),
		{0x60, 0, 0, 0, 0, 0},
		nil,
	}
}

// FuzzParseIPv6: never panics; an accepted packet satisfies every
// documented check and its fields are the bytes; DecrementHopLimit
// changes the hop limit byte alone, and only above 1.
func FuzzParseIPv6(f *testing.F) {
	for _, b := range seedPackets6(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseIPv6(b)
		if err != nil {
			if _, ok := err.(ParseError); !ok {
				t.Fatalf("error %T is not a ParseError", err)
			}
			if DecrementHopLimit(b) && len(b) < IPv6HeaderLen {
				t.Fatal("decremented a buffer shorter than a header")
			}
			return
		}
		if b[0]>>4 != 6 || p.Len() > len(b) || int(p.PayloadLen) != int(binary.BigEndian.Uint16(b[4:6])) {
			t.Fatalf("accepted an invalid header: %+v", p)
		}
		if p.Src != [16]byte(b[8:24]) || p.Dst != [16]byte(b[24:40]) || p.NextHeader != b[6] || p.HopLimit != b[7] {
			t.Fatalf("fields do not match the bytes: %+v", p)
		}
		if n, ok := DeclaredLen(b); !ok || n != p.Len() {
			t.Fatalf("DeclaredLen %d, Len %d", n, p.Len())
		}
		ShouldAnswer6(p, b) // must not panic on any chain
		before := append([]byte(nil), b...)
		if !DecrementHopLimit(b) {
			if before[7] > 1 || !bytes.Equal(b, before) {
				t.Fatalf("refused hop limit %d or modified the packet", before[7])
			}
			return
		}
		if b[7] != before[7]-1 || !bytes.Equal(b[:7], before[:7]) || !bytes.Equal(b[8:], before[8:]) {
			t.Fatal("DecrementHopLimit changed more than the hop limit")
		}
	})
}

// FuzzICMPv6Errors: for any original, kind, MTU and buffer size, whatever
// is written is an ICMPv6 error of at most 1280 bytes to the original's
// source, its checksum verifying and its quote a prefix of the original.
func FuzzICMPv6Errors(f *testing.F) {
	for i, b := range seedPackets6(f) {
		f.Add(b, uint8(i%3), uint32(1400), uint16(1300))
	}
	f.Fuzz(func(t *testing.T, orig []byte, kind uint8, mtu uint32, dstLen uint16) {
		dst := make([]byte, int(dstLen)%2000)
		var n int
		var err error
		switch kind % 3 {
		case 0:
			n, err = DestUnreachable6(dst, orig, answer6S)
		case 1:
			n, err = PacketTooBig(dst, orig, answer6S, mtu)
		default:
			n, err = TimeExceeded6(dst, orig, answer6S)
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("n = %d with error %v", n, err)
			}
			return
		}
		out := dst[:n]
		p, err := ParseIPv6(out)
		if err != nil || p.Len() != n || n > MaxICMPv6ErrorLen || p.NextHeader != 58 || p.HopLimit != 64 {
			t.Fatalf("bad answer header %+v (n %d, %v)", p, n, err)
		}
		o, _ := ParseIPv6(orig)
		if p.Dst != o.Src || p.Src != answer6S || out[40] != kind%3+1 {
			t.Fatalf("answer %+v to original %+v", p, o)
		}
		if Checksum(out[40:], PseudoSum(58, out[8:24], out[24:40], n-40)) != 0 {
			t.Fatal("checksum does not verify")
		}
		if !bytes.Equal(out[48:], orig[:n-48]) {
			t.Fatal("quote is not a prefix of the original")
		}
	})
}
