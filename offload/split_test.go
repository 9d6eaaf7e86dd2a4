package offload

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/packet"
)

const mss = 1448

// splitAll splits and verifies every produced packet; it returns what a
// receiver sees.
func splitAll(t *testing.T, pkt []byte, h packet.VirtioNetHdr) []decoded {
	t.Helper()
	out, sizes := buffers(64, 2000), make([]int, 64)
	n, err := Split(pkt, h, out, sizes, 4)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	ds := make([]decoded, n)
	for i := range n {
		ds[i] = verify(t, out[i][4:4+sizes[i]])
	}
	return ds
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
	pkt, h := superPacket(t, spec{fin: true, payload: pattern(2*mss + 1)}, mss)
	ds := splitAll(t, pkt, h)
	for i, d := range ds {
		if d.tcp.FIN != (i == len(ds)-1) {
			t.Errorf("segment %d of %d: FIN=%t", i, len(ds), d.tcp.FIN)
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
	// A GSO packet no longer than gso_size still gets a full checksum.
	pkt, h := superPacket(t, spec{payload: pattern(500)}, mss)
	if ds := splitAll(t, pkt, h); len(ds) != 1 || len(ds[0].payload) != 500 {
		t.Fatalf("got %d segments", len(ds))
	}
}

func TestSplitNeedsCsumOnly(t *testing.T) {
	for _, s := range []spec{{payload: pattern(999)}, {udp: true, payload: pattern(77)}, {v6: true, payload: pattern(10)}} {
		pkt, h := superPacket(t, s, 0)
		h.GSOType, h.GSOSize = packet.GSONone, 0
		ds := splitAll(t, pkt, h)
		if len(ds) != 1 {
			t.Fatalf("%d packets, want 1", len(ds))
		}
		equalBytes(t, "payload", ds[0].payload, s.payload)

		// In place, the same.
		if err := CompleteChecksum(pkt, h); err != nil {
			t.Fatal(err)
		}
		verify(t, pkt)
	}
}

func TestSplitPlainPacketCopiedUnchanged(t *testing.T) {
	pkt := build(t, spec{payload: pattern(300)})
	out, sizes := buffers(1, 400), make([]int, 1)
	n, err := Split(pkt, packet.VirtioNetHdr{}, out, sizes, 0)
	if err != nil || n != 1 {
		t.Fatalf("Split = %d, %v", n, err)
	}
	equalBytes(t, "copy", out[0][:sizes[0]], pkt)
}

func TestSplitErrors(t *testing.T) {
	good, gh := superPacket(t, spec{payload: pattern(3 * mss)}, mss)
	mod := func(f func(p []byte, h *packet.VirtioNetHdr)) ([]byte, packet.VirtioNetHdr) {
		p, h := append([]byte(nil), good...), gh
		f(p, &h)
		return p, h
	}
	cases := []struct {
		name string
		f    func(p []byte, h *packet.VirtioNetHdr)
		nOut int
		size int
		want string
	}{
		{"hdr_len past the end", func(p []byte, h *packet.VirtioNetHdr) { h.HdrLen = uint16(len(p) + 1) }, 8, 2000, "hdr_len"},
		{"gso_size 0", func(p []byte, h *packet.VirtioNetHdr) { h.GSOSize = 0 }, 8, 2000, "gso_size 0"},
		{"IP version 5", func(p []byte, h *packet.VirtioNetHdr) { p[0] = 0x55 }, 8, 2000, "IP version 5"},
		{"TCPV6 on IPv4", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = packet.GSOTCPv6 }, 8, 2000, "does not match"},
		{"UFO", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = packet.GSOUDP }, 8, 2000, "UFO"},
		{"unknown GSO type", func(p []byte, h *packet.VirtioNetHdr) { h.GSOType = 9 }, 8, 2000, "GSO type 9"},
		{"IPv4 total length", func(p []byte, h *packet.VirtioNetHdr) { p[2]++ }, 8, 2000, "total length"},
		{"IHL below 5", func(p []byte, h *packet.VirtioNetHdr) { p[0] = 0x44 }, 8, 2000, "header length"},
		{"TCP data offset past end", func(p []byte, h *packet.VirtioNetHdr) { p[32] = 0x40 }, 8, 2000, "data offset"},
		{"fragment", func(p []byte, h *packet.VirtioNetHdr) { p[6] |= 0x20 }, 8, 2000, "fragment"},
		{"csum_start elsewhere", func(p []byte, h *packet.VirtioNetHdr) { h.CsumStart = 24 }, 8, 2000, "csum_start"},
		{"too few buffers", func(p []byte, h *packet.VirtioNetHdr) {}, 2, 2000, "more segments than output buffers"},
		{"buffers too small", func(p []byte, h *packet.VirtioNetHdr) {}, 8, 1000, "segment needs"},
		{"NEEDS_CSUM past the end", func(p []byte, h *packet.VirtioNetHdr) {
			h.GSOType, h.CsumStart = packet.GSONone, uint16(len(p)-1)
		}, 8, 70000, "past the end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, h := mod(c.f)
			out, sizes := buffers(c.nOut, c.size), make([]int, c.nOut)
			n, err := Split(p, h, out, sizes, 0)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Split = %d, %v; want an error about %q", n, err, c.want)
			}
			if n != 0 {
				t.Fatalf("Split returned %d packets with an error", n)
			}
			if !bytes.Equal(out[0][:64], make([]byte, 64)) {
				t.Fatalf("Split wrote output before failing")
			}
		})
	}
}

func TestSplitTruncatedPacketsNeverPanic(t *testing.T) {
	pkt, h := superPacket(t, spec{v6: true, payload: pattern(2 * mss)}, mss)
	out, sizes := buffers(4, 2000), make([]int, 4)
	for n := range len(pkt) {
		h.HdrLen = 0
		if _, err := Split(pkt[:n], h, out, sizes, 0); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
}

func TestSplitDoesNotAllocate(t *testing.T) {
	pkt, h := superPacket(t, spec{payload: pattern(44 * mss)}, mss)
	out, sizes := buffers(64, 2000), make([]int, 64)
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := Split(pkt, h, out, sizes, 10); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Split allocates %.1f times per super-packet", allocs)
	}
	if binary.BigEndian.Uint16(out[43][10+2:]) != uint16(40+mss) {
		t.Fatalf("last segment not written")
	}
}
