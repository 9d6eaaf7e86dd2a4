package offload

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/flannelu/flannelu/internal/packet"
)

func protoField(v6 bool) int {
	if v6 {
		return 6
	}
	return 9
}

func FuzzSplit(f *testing.F) {
	for _, s := range []struct {
		s   spec
		gso int
	}{
		{spec{seq: 1, psh: true, payload: pattern(2500)}, 1000},
		{spec{v6: true, cwr: true, fin: true, tsVal: 3, payload: pattern(2001)}, 1000},
		{spec{udp: true, payload: pattern(1500)}, 700},
		{spec{udp: true, v6: true, payload: pattern(30)}, 700},
	} {
		p, h := superPacket(f, s.s, s.gso)
		gso, none := make([]byte, packet.VirtioNetHdrLen), make([]byte, packet.VirtioNetHdrLen)
		_ = h.Encode(gso)
		f.Add(gso, p)
		h.GSOType, h.GSOSize = packet.GSONone, 0
		_ = h.Encode(none)
		f.Add(none, p)
	}
	heads, payloads := headSlots(64), make([][]byte, 64)
	f.Fuzz(func(t *testing.T, hb, pkt []byte) {
		var h packet.VirtioNetHdr
		if err := h.Decode(hb); err != nil {
			return
		}
		if h.GSOType&^packet.GSOECNBit == packet.GSONone {
			got := append([]byte(nil), pkt...)
			if CompleteChecksum(got, h) == nil {
				checkCompleted(t, pkt, h, got)
			}
			return
		}
		orig := append([]byte(nil), pkt...)
		n, err := Split(pkt, h, heads, payloads)
		if err != nil {
			if n != 0 {
				t.Fatalf("%d segments with error %v", n, err)
			}
			return
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("Split changed the super-packet")
		}
		segs := make([][]byte, n)
		for i := range n {
			segs[i] = append(append([]byte(nil), heads[i]...), payloads[i]...)
		}
		checkSegments(t, pkt, segs)
		for i, want := range copySplit(pkt, h) {
			if i >= n || !bytes.Equal(segs[i], want) {
				t.Fatalf("segment %d differs from the copying split's", i)
			}
		}
	})
}

func checkCompleted(t *testing.T, pkt []byte, h packet.VirtioNetHdr, got []byte) {
	if h.Flags&packet.FlagNeedsCsum == 0 {
		if !bytes.Equal(got, pkt) {
			t.Fatalf("plain packet changed")
		}
		return
	}
	at := int(h.CsumStart) + int(h.CsumOffset)
	if !bytes.Equal(got[:at], pkt[:at]) || !bytes.Equal(got[at+2:], pkt[at+2:]) {
		t.Fatalf("bytes other than the checksum field changed")
	}
	if h.CsumOffset%2 != 0 {
		// The kernel accepts a field at an odd offset and fills it all
		// the same (skb_checksum_help); no 16-bit word of the sum holds
		// it, so the result cannot verify as one.
		return
	}
	// The field held the pseudo-header sum P; with P added back in front
	// (2 bytes keep the word alignment) the completed data sums to zero.
	withP := append([]byte{pkt[at], pkt[at+1]}, got[h.CsumStart:]...)
	if packet.Checksum(withP, 0) != 0 {
		t.Fatalf("completed checksum does not verify")
	}
}

// checkSegments verifies every segment independently of Split's own
// parsing and that their payloads concatenate to the super-packet's.
func checkSegments(t *testing.T, pkt []byte, segs [][]byte) {
	v6 := pkt[0]>>4 == 6
	l4Off := 40
	if !v6 {
		l4Off = int(pkt[0]&0xf) * 4
	}
	hdrLen := l4Off + 8
	if pkt[protoField(v6)] == protoTCP {
		hdrLen = l4Off + int(pkt[l4Off+12]>>4)*4
	}
	var payload []byte
	for i, seg := range segs {
		if !v6 && packet.Checksum(seg[:l4Off], 0) != 0 {
			t.Fatalf("segment %d: IPv4 header checksum", i)
		}
		if !refL4Valid(seg, v6, l4Off) {
			t.Fatalf("segment %d: L4 checksum", i)
		}
		if _, err := parseIP(seg); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		payload = append(payload, seg[hdrLen:]...)
	}
	if !bytes.Equal(payload, pkt[hdrLen:]) {
		t.Fatalf("payload not preserved: %d bytes, want %d", len(payload), len(pkt)-hdrLen)
	}
}

// script turns fuzz bytes into a batch of mostly valid packets of a few
// flows, so that the fuzzer explores merging rather than parse errors.
// Each packet takes 3 bytes: flags/kind, sequence step, payload size.
func script(tb testing.TB, ops []byte) [][]byte {
	var pkts [][]byte
	next := map[int]uint32{}
	for len(ops) >= 3 && len(pkts) < 64 {
		a, b, c := ops[0], ops[1], ops[2]
		ops = ops[3:]
		s := spec{flow: int(a & 3), v6: a&4 != 0, udp: a&8 != 0, ack: uint32(a >> 7)}
		switch a >> 4 & 7 {
		case 1:
			s.psh = true
		case 2:
			s.fin = true
		case 3:
			s.syn = true
		case 4:
			s.cwr = true
		case 5:
			s.badL4Check = true
		case 6:
			s.ttl = 9
		}
		s.payload = pattern([]int{600, 600, 600, 600, 300, 1, 1400, 0}[c&7])
		if s.badL4Check && len(s.payload) == 0 {
			s.badL4Check = false
		}
		key := s.flow<<2 | int(a&12)
		s.seq = next[key] + uint32(b&3)*600 - uint32(b>>2&1)*600
		next[key] = s.seq + uint32(len(s.payload))
		pkts = append(pkts, build(tb, s))
	}
	return pkts
}

func FuzzCoalesce(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0}, []byte{}, false)
	f.Add([]byte{8, 0, 0, 8, 0, 0, 8, 0, 4, 12, 0, 0, 12, 0, 0}, []byte{0x45, 0}, true)
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 4, 0, 0x50, 0, 0, 0, 0, 0, 0x20, 0, 0}, []byte{0x60}, false)
	c := NewCoalescer(CoalescerOptions{MaxBatch: 8})
	f.Fuzz(func(t *testing.T, ops, raw []byte, udp bool) {
		pkts := script(t, ops)
		pkts = append(pkts, raw)
		c.udp = udp
		var got [][]byte
		for _, parts := range c.Coalesce(clone(pkts)) {
			w := flatten(t, parts)
			h, p := w.hdr, w.pkt
			if h.GSOType == packet.GSONone {
				got = append(got, p)
				continue
			}
			if v6 := p[0]>>4 == 6; binary.BigEndian.Uint16(p[h.CsumStart+h.CsumOffset:]) != partialSum(p, v6, int(h.CsumStart)) {
				t.Fatalf("partial checksum of the super-packet")
			}
			segs, err := splitJoined(t, p, h)
			if err != nil {
				t.Fatalf("kernel-side split of our super-packet: %v", err)
			}
			checkSegments(t, p, segs)
			got = append(got, segs...)
		}
		comparePerFlow(t, pkts, got)
	})
}

// comparePerFlow checks that no packet was lost or added and that, per
// flow, the payload bytes come out in the order they went in; packets that
// are not TCP/UDP come out unchanged and in order.
func comparePerFlow(t *testing.T, in, out [][]byte) {
	if len(in) != len(out) {
		t.Fatalf("%d packets in, %d after splitting the writes", len(in), len(out))
	}
	flows := func(pkts [][]byte) (map[flowKey][]byte, [][]byte) {
		m := map[flowKey][]byte{}
		var other [][]byte
		for _, p := range pkts {
			ip, err := parseIP(p)
			if err != nil || (ip.proto != protoTCP && ip.proto != protoUDP) {
				other = append(other, p)
				continue
			}
			n, err := l4HdrLen(p, ip)
			if err != nil {
				other = append(other, p)
				continue
			}
			k := makeKey(p, ip)
			m[k] = append(m[k], p[ip.l4Off+n:]...)
		}
		return m, other
	}
	mi, oi := flows(in)
	mo, oo := flows(out)
	for k, v := range mi {
		if !bytes.Equal(v, mo[k]) {
			t.Fatalf("flow %x: payload changed or reordered", k[:])
		}
	}
	if len(mi) != len(mo) || len(oi) != len(oo) {
		t.Fatalf("flows %d -> %d, other packets %d -> %d", len(mi), len(mo), len(oi), len(oo))
	}
	for i := range oi {
		if !bytes.Equal(oi[i], oo[i]) {
			t.Fatalf("other packet %d changed", i)
		}
	}
}
