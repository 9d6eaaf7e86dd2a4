package offload

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"unsafe"

	"github.com/flannelu/flannelu/internal/packet"
)

const mss = 1448

// headSlots is n header slots of MaxHeaderLen bytes, as the udp backend
// keeps them.
func headSlots(n int) [][]byte { return buffers(n, MaxHeaderLen) }

// splitJoined splits pkt and returns each wire packet as one slice: its
// header slot followed by its payload, as the kernel copies them from a
// sendmsg's iovecs.
func splitJoined(tb testing.TB, pkt []byte, h packet.VirtioNetHdr) ([][]byte, error) {
	tb.Helper()
	heads, payloads := headSlots(64), make([][]byte, 64)
	n, err := Split(pkt, h, heads, payloads)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	for i := range n {
		out[i] = append(append([]byte(nil), heads[i]...), payloads[i]...)
	}
	return out, nil
}

// splitAll splits, checks every wire packet against copySplit byte for
// byte, verifies each independently, and returns what a receiver sees.
func splitAll(t *testing.T, pkt []byte, h packet.VirtioNetHdr) []decoded {
	t.Helper()
	segs, err := splitJoined(t, pkt, h)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	want := copySplit(pkt, h)
	if len(segs) != len(want) {
		t.Fatalf("%d segments, the copying split made %d", len(segs), len(want))
	}
	ds := make([]decoded, len(segs))
	for i, seg := range segs {
		equalBytes(t, "segment against the copying split", seg, want[i])
		ds[i] = verify(t, seg)
	}
	return ds
}

// copySplit is how Split segmented until it stopped copying payloads
// (before this package wrote headers into slots): per segment a
// contiguous copy of the super-packet's headers and the segment's payload,
// the fields fixed in place, the IPv4 header checksum and the L4 checksum
// summed over the contiguous result, here with the test's hand-built
// pseudo-header. Split's header slot followed by its payload slice must
// equal it byte for byte.
func copySplit(pkt []byte, h packet.VirtioNetHdr) [][]byte {
	v6 := pkt[0]>>4 == 6
	l4Off := 40
	if !v6 {
		l4Off = int(pkt[0]&0xf) * 4
	}
	udp := pkt[protoField(v6)] == protoUDP
	hdrLen, csumOff := l4Off+8, 6
	if !udp {
		hdrLen, csumOff = l4Off+int(pkt[l4Off+12]>>4)*4, 16
	}
	var out [][]byte
	for start := hdrLen; ; start += int(h.GSOSize) {
		end := min(start+int(h.GSOSize), len(pkt))
		seg := append(append([]byte(nil), pkt[:hdrLen]...), pkt[start:end]...)
		i, last := len(out), end == len(pkt)
		if v6 {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)-40))
		} else {
			binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)))
			binary.BigEndian.PutUint16(seg[4:], binary.BigEndian.Uint16(seg[4:])+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], packet.Checksum(seg[:l4Off], 0))
		}
		l4 := seg[l4Off:]
		if udp {
			binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		} else {
			binary.BigEndian.PutUint32(l4[4:], binary.BigEndian.Uint32(l4[4:])+uint32(start-hdrLen))
			if !last {
				l4[13] &^= tcpFIN | tcpPSH
			}
			if i > 0 {
				l4[13] &^= tcpCWR
			}
		}
		l4[csumOff], l4[csumOff+1] = 0, 0
		c := packet.Checksum(append(pseudoHeader(seg, v6, l4Off), l4...), 0)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
		out = append(out, seg)
		if last {
			return out
		}
	}
}

func TestSplitTSO4(t *testing.T) {
	payload := pattern(3*mss + 100)
	pkt, h := superPacket(t, spec{seq: 0xfffff000, ack: 77, id: 0xfffe, psh: true, cwr: true, tsVal: 12345, payload: payload}, mss)
	h.HdrLen = uint16(len(pkt)) // the kernel may report its linear head length
	ds := splitAll(t, pkt, h)
	if len(ds) != 4 {
		t.Fatalf("%d segments, want 4", len(ds))
	}
	var got []byte
	for i, d := range ds {
		wantLen := mss
		if i == 3 {
			wantLen = 100
		}
		if len(d.payload) != wantLen {
			t.Errorf("segment %d: %d payload bytes, want %d", i, len(d.payload), wantLen)
		}
		if want := uint32(0xfffff000) + uint32(i*mss); d.seq != want { // wraps past 2^32
			t.Errorf("segment %d: seq %#x, want %#x", i, d.seq, want)
		}
		if want := uint16(0xfffe + i); d.id != want {
			t.Errorf("segment %d: IPv4 id %#x, want %#x", i, d.id, want)
		}
		if d.tcp.PSH != (i == 3) || d.tcp.CWR != (i == 0) || !d.tcp.ACK || d.tcp.Ack != 77 {
			t.Errorf("segment %d: PSH=%t CWR=%t ACK=%t ack=%d", i, d.tcp.PSH, d.tcp.CWR, d.tcp.ACK, d.tcp.Ack)
		}
		if len(d.tcp.Options) != 3 {
			t.Errorf("segment %d: %d TCP options, want the 3 of the super-packet", i, len(d.tcp.Options))
		}
		got = append(got, d.payload...)
	}
	equalBytes(t, "concatenated payload", got, payload)
}

func TestSplitFINOnlyOnLast(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		pkt, h := superPacket(t, spec{v6: v6, fin: true, psh: true, cwr: true, payload: pattern(2*mss + 1)}, mss)
		ds := splitAll(t, pkt, h)
		for i, d := range ds {
			last := i == len(ds)-1
			if d.tcp.FIN != last || d.tcp.PSH != last || d.tcp.CWR != (i == 0) {
				t.Errorf("v6=%t segment %d of %d: FIN=%t PSH=%t CWR=%t", v6, i, len(ds), d.tcp.FIN, d.tcp.PSH, d.tcp.CWR)
			}
		}
	}
}

func TestSplitTSO6(t *testing.T) {
	payload := pattern(5*1428 + 1)
	pkt, h := superPacket(t, spec{v6: true, seq: 1000, payload: payload}, 1428)
	ds := splitAll(t, pkt, h)
	if len(ds) != 6 {
		t.Fatalf("%d segments, want 6", len(ds))
	}
	var got []byte
	for i, d := range ds {
		if !d.v6 || d.seq != uint32(1000+i*1428) {
			t.Errorf("segment %d: v6=%t seq=%d", i, d.v6, d.seq)
		}
		got = append(got, d.payload...)
	}
	equalBytes(t, "concatenated payload", got, payload)
}

func TestSplitUSO(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := pattern(3*1200 + 7)
		pkt, h := superPacket(t, spec{v6: v6, udp: true, id: 9, payload: payload}, 1200)
		ds := splitAll(t, pkt, h)
		if len(ds) != 4 {
			t.Fatalf("v6=%t: %d datagrams, want 4", v6, len(ds))
		}
		for i, d := range ds {
			want := payload[i*1200 : min((i+1)*1200, len(payload))]
			equalBytes(t, "datagram payload", d.payload, want)
			if !v6 && d.id != uint16(9+i) {
				t.Errorf("datagram %d: IPv4 id %d, want %d", i, d.id, 9+i)
			}
		}
	}
}

func TestSplitPayloadWithinOneSegment(t *testing.T) {
	// A GSO packet no longer than gso_size still gets a full checksum, and
	// one whose payload is an exact multiple has no empty last segment.
	pkt, h := superPacket(t, spec{payload: pattern(500)}, mss)
	if ds := splitAll(t, pkt, h); len(ds) != 1 || len(ds[0].payload) != 500 {
		t.Fatalf("got %d segments", len(ds))
	}
	pkt, h = superPacket(t, spec{v6: true, payload: pattern(3 * mss)}, mss)
	if ds := splitAll(t, pkt, h); len(ds) != 3 || len(ds[2].payload) != mss {
		t.Fatalf("exact multiple: got %d segments", len(ds))
	}
}

// TestSplitCopiesNoPayload holds Split to its point: every payload is a
// slice of the super-packet itself, and only header slots are written.
func TestSplitCopiesNoPayload(t *testing.T) {
	pkt, h := superPacket(t, spec{tsVal: 1, payload: pattern(10 * mss)}, mss)
	orig := append([]byte(nil), pkt...)
	heads, payloads := headSlots(16), make([][]byte, 16)
	n, err := Split(pkt, h, heads, payloads)
	if err != nil || n != 10 {
		t.Fatalf("Split = %d, %v", n, err)
	}
	for i := range n {
		want := unsafe.Pointer(&pkt[int(h.HdrLen)+i*mss])
		if unsafe.Pointer(unsafe.SliceData(payloads[i])) != want {
			t.Fatalf("payload %d is not the super-packet's own bytes", i)
		}
	}
	equalBytes(t, "super-packet after Split", pkt, orig)
}

func TestCompleteChecksum(t *testing.T) {
	for _, s := range []spec{{payload: pattern(999)}, {udp: true, payload: pattern(77)}, {v6: true, payload: pattern(10)}} {
		pkt, h := superPacket(t, s, 0)
		h.GSOType, h.GSOSize = packet.GSONone, 0
		if err := CompleteChecksum(pkt, h); err != nil {
			t.Fatal(err)
		}
		equalBytes(t, "payload", verify(t, pkt).payload, s.payload)
	}
	pkt, h := superPacket(t, spec{payload: pattern(10)}, 0)
	h.GSOType, h.CsumStart = packet.GSONone, uint16(len(pkt)-1)
	if err := CompleteChecksum(pkt, h); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Fatalf("NEEDS_CSUM past the end: %v", err)
	}
}

func TestSplitErrors(t *testing.T) {
	good, gh := superPacket(t, spec{payload: pattern(3 * mss)}, mss)
	mod := func(f func(p []byte, h *packet.VirtioNetHdr)) ([]byte, packet.VirtioNetHdr) {
		p, h := append([]byte(nil), good...), gh
		f(p, &h)
		return p, h
	}
	cases := []struct {
		name  string
		f     func(p []byte, h *packet.VirtioNetHdr)
		slots int
		size  int
		want  string
	}{
		{"hdr_len past the end", func(p []byte, h *packet.VirtioNetHdr) { h.HdrLen = uint16(len(p) + 1) }, 8, MaxHeaderLen, "hdr_len"},
		{"no GSO", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = packet.GSONone }, 8, MaxHeaderLen, "not a GSO packet"},
		{"gso_size 0", func(p []byte, h *packet.VirtioNetHdr) { h.GSOSize = 0 }, 8, MaxHeaderLen, "gso_size 0"},
		{"IP version 5", func(p []byte, h *packet.VirtioNetHdr) { p[0] = 0x55 }, 8, MaxHeaderLen, "IP version 5"},
		{"TCPV6 on IPv4", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = packet.GSOTCPv6 }, 8, MaxHeaderLen, "does not match"},
		{"UFO", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = packet.GSOUDP }, 8, MaxHeaderLen, "UFO"},
		{"unknown GSO type", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = 9 }, 8, MaxHeaderLen, "GSO type 9"},
		{"IPv4 total length", func(p []byte, h *packet.VirtioNetHdr) { p[2]++ }, 8, MaxHeaderLen, "total length"},
		{"IHL below 5", func(p []byte, h *packet.VirtioNetHdr) { p[0] = 0x44 }, 8, MaxHeaderLen, "header length"},
		{"TCP data offset past end", func(p []byte, h *packet.VirtioNetHdr) { p[32] = 0x40 }, 8, MaxHeaderLen, "data offset"},
		{"fragment", func(p []byte, h *packet.VirtioNetHdr) { p[6] |= 0x20 }, 8, MaxHeaderLen, "fragment"},
		{"csum_start elsewhere", func(p []byte, h *packet.VirtioNetHdr) { h.CsumStart = 24 }, 8, MaxHeaderLen, "csum_start"},
		{"too few header slots", func(p []byte, h *packet.VirtioNetHdr) {}, 2, MaxHeaderLen, "more segments than header slots"},
		{"header slots too small", func(p []byte, h *packet.VirtioNetHdr) {}, 8, 39, "headers are 40"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, h := mod(c.f)
			heads, payloads := buffers(c.slots, c.size), make([][]byte, c.slots)
			n, err := Split(p, h, heads, payloads)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Split = %d, %v; want an error about %q", n, err, c.want)
			}
			if n != 0 {
				t.Fatalf("Split returned %d segments with an error", n)
			}
			if !bytes.Equal(heads[0], make([]byte, c.size)) || payloads[0] != nil {
				t.Fatalf("Split wrote output before failing")
			}
		})
	}
}

func TestSplitTruncatedPacketsNeverPanic(t *testing.T) {
	pkt, h := superPacket(t, spec{v6: true, payload: pattern(2 * mss)}, mss)
	heads, payloads := headSlots(4), make([][]byte, 4)
	for n := range len(pkt) {
		h.HdrLen = 0
		if _, err := Split(pkt[:n], h, heads, payloads); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
}

func TestSplitDoesNotAllocate(t *testing.T) {
	pkt, h := superPacket(t, spec{payload: pattern(44 * mss)}, mss)
	heads, payloads := headSlots(64), make([][]byte, 64)
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := Split(pkt, h, heads, payloads); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Split allocates %.1f times per super-packet", allocs)
	}
	if binary.BigEndian.Uint16(heads[43][2:]) != uint16(40+mss) || len(payloads[43]) != mss {
		t.Fatalf("last segment not written")
	}
}
