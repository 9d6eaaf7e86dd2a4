package packet

import (
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var answer6S = [16]byte(pod6B.To16()) // the forwarder answers from orig's destination

// decodeICMPv6 decodes an answer with gopacket and checks the checksum
// against RFC 8200 8.1's pseudo-header laid out byte by byte.
func decodeICMPv6(t *testing.T, b []byte) (*layers.IPv6, *layers.ICMPv6) {
	t.Helper()
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ip == nil || icmp == nil {
		t.Fatalf("answer is not IPv6+ICMPv6: %v", pkt)
	}
	msg := b[40:]
	pseudo := append(append([]byte(nil), b[8:40]...), 0, 0, byte(len(msg)>>8), byte(len(msg)), 0, 0, 0, 58)
	if refChecksum(append(pseudo, msg...)) != 0 {
		t.Fatalf("ICMPv6 checksum %#04x does not verify", icmp.Checksum)
	}
	return ip, icmp
}

func TestICMPv6Errors(t *testing.T) {
	orig := udp6Packet(t, pod6A, pod6B, 1, 100)
	tests := []struct {
		name     string
		write    func(dst []byte) (int, error)
		typ      uint8
		wantRest uint32
	}{
		{"no route", func(dst []byte) (int, error) { return DestUnreachable6(dst, orig, answer6S) }, 1, 0},
		{"packet too big", func(dst []byte) (int, error) { return PacketTooBig(dst, orig, answer6S, 1452) }, 2, 1452},
		{"time exceeded", func(dst []byte) (int, error) { return TimeExceeded6(dst, orig, answer6S) }, 3, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]byte, 2048)
			n, err := tc.write(dst)
			if err != nil {
				t.Fatal(err)
			}
			if want := 40 + 8 + len(orig); n != want {
				t.Fatalf("n = %d, want %d", n, want)
			}
			ip, icmp := decodeICMPv6(t, dst[:n])
			if !ip.SrcIP.Equal(pod6B) || !ip.DstIP.Equal(pod6A) || ip.HopLimit != 64 || ip.NextHeader != layers.IPProtocolICMPv6 || int(ip.Length) != n-40 {
				t.Fatalf("outer header %v -> %v hops %d next %v len %d", ip.SrcIP, ip.DstIP, ip.HopLimit, ip.NextHeader, ip.Length)
			}
			if icmp.TypeCode != layers.CreateICMPv6TypeCode(tc.typ, 0) {
				t.Fatalf("type/code = %v", icmp.TypeCode)
			}
			if rest := binary.BigEndian.Uint32(dst[44:48]); rest != tc.wantRest {
				t.Fatalf("rest of header = %d, want %d", rest, tc.wantRest)
			}
			if string(dst[48:n]) != string(orig) {
				t.Fatal("quote differs from the original packet")
			}
		})
	}
}

func TestICMPv6QuoteAndRefusals(t *testing.T) {
	big := udp6Packet(t, pod6A, pod6B, 64, 1400)
	dst := make([]byte, 2000)
	n, err := PacketTooBig(dst, big, answer6S, 1280)
	if err != nil || n != MaxICMPv6ErrorLen {
		t.Fatalf("big original: n = %d, %v; want %d", n, err, MaxICMPv6ErrorLen)
	}
	decodeICMPv6(t, dst[:n])
	if string(dst[48:n]) != string(big[:MaxICMPv6ErrorLen-48]) {
		t.Fatal("quote is not the original's first 1232 bytes")
	}
	if n, err := DestUnreachable6(dst[:48+48], big, answer6S); err != nil || n != 96 {
		t.Fatalf("minimal dst: %d, %v", n, err)
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"malformed", errOf(DestUnreachable6(dst, big[:30], answer6S)), ErrMalformedOriginal},
		{"icmpv6 error original", errOf(TimeExceeded6(dst, icmp6Packet(t, 1), answer6S)), ErrMustNotAnswer},
		{"short dst", errOf(DestUnreachable6(dst[:95], big, answer6S)), ErrShortBuffer},
		{"mtu 1279", errOf(PacketTooBig(dst, big, answer6S, 1279)), ErrBadMTU},
	}
	for _, tc := range tests {
		if tc.err != tc.want {
			t.Errorf("%s: err = %v, want %v", tc.name, tc.err, tc.want)
		}
	}
}

func errOf(_ int, err error) error { return err }

func TestICMPv6AllocatesNothing(t *testing.T) {
	orig := udp6Packet(t, pod6A, pod6B, 64, 1400)
	dst := make([]byte, 1500)
	allocs := testing.AllocsPerRun(1000, func() {
		p, err := ParseIPv6(orig)
		if err != nil || !DecrementHopLimit(orig) {
			panic("parse or decrement")
		}
		orig[7] = p.HopLimit
		if _, err := PacketTooBig(dst, orig, answer6S, 1452); err != nil {
			panic(err)
		}
		if _, err := TimeExceeded6(dst, orig, answer6S); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("IPv6 parse and ICMPv6 errors: %v allocs, want 0", allocs)
	}
}
