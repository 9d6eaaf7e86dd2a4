package offload

import (
	"testing"

	"github.com/flannelu/flannelu/internal/packet"
)

const headroom = 16 // >= packet.VirtioNetHdrLen, like a TUN writer reserving space

type write struct {
	hdr packet.VirtioNetHdr
	pkt []byte
}

// clone copies pkts, which Coalesce may rewrite, into fresh slices.
func clone(pkts [][]byte) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = append([]byte(nil), p...)
	}
	return out
}

// flatten is what the kernel reads from one write: its parts concatenated.
func flatten(t testing.TB, parts [][]byte) write {
	t.Helper()
	if len(parts) < 2 || len(parts[0]) != packet.VirtioNetHdrLen {
		t.Fatalf("write of %d parts: want a virtio header and a packet", len(parts))
	}
	var w write
	if err := w.hdr.Decode(parts[0]); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts[1:] {
		w.pkt = append(w.pkt, p...)
	}
	return w
}

func coalesce(t *testing.T, c *Coalescer, pkts [][]byte) []write {
	t.Helper()
	out := c.Coalesce(clone(pkts))
	ws := make([]write, len(out))
	for i, parts := range out {
		ws[i] = flatten(t, parts)
	}
	return ws
}

// segments is what the kernel makes of one write: the super-packet split
// (its partial checksum checked against an independent computation), or
// the plain packet.
func segments(t *testing.T, w write) []decoded {
	t.Helper()
	if w.hdr.GSOType == packet.GSONone {
		if w.hdr != (packet.VirtioNetHdr{}) {
			t.Fatalf("plain write with header %v", w.hdr)
		}
		return []decoded{verify(t, w.pkt)}
	}
	l4 := int(w.hdr.CsumStart)
	got := uint16(w.pkt[l4+int(w.hdr.CsumOffset)])<<8 | uint16(w.pkt[l4+int(w.hdr.CsumOffset)+1])
	if want := partialSum(w.pkt, w.pkt[0]>>4 == 6, l4); got != want || w.hdr.Flags != packet.FlagNeedsCsum {
		t.Fatalf("super-packet partial checksum %#04x flags %#x, want %#04x with NEEDS_CSUM", got, w.hdr.Flags, want)
	}
	return splitAll(t, w.pkt, w.hdr)
}

func tcpSeg(flow int, seq uint32, n int) spec {
	return spec{flow: flow, seq: seq, ack: 5, tsVal: 99, payload: pattern(n + flow)[flow:]}
}

func TestCoalesceRestoresSplitSuperPacket(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := spec{v6: v6, seq: 4242, ack: 1, id: 300, psh: true, tsVal: 7, payload: pattern(44 * 1436)}
		orig, oh := superPacket(t, s, 1436)
		segs, err := splitJoined(t, orig, oh)
		if err != nil || len(segs) != 44 {
			t.Fatalf("Split = %d, %v", len(segs), err)
		}
		ws := coalesce(t, NewCoalescer(CoalescerOptions{MaxBatch: 64}), segs)
		if len(ws) != 1 {
			t.Fatalf("v6=%t: %d writes, want 1", v6, len(ws))
		}
		if ws[0].hdr != oh {
			t.Fatalf("v6=%t: header %v, want the one the kernel gave the original: %v", v6, ws[0].hdr, oh)
		}
		equalBytes(t, "rebuilt super-packet", ws[0].pkt, orig)
	}
}

func TestCoalesceInterleavedFlows(t *testing.T) {
	var pkts [][]byte
	for i := range 3 {
		pkts = append(pkts, build(t, tcpSeg(1, uint32(i*mss), mss)), build(t, tcpSeg(2, uint32(1e6+i*mss), mss)))
	}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 2 {
		t.Fatalf("%d writes, want one per flow", len(ws))
	}
	for f, w := range ws {
		ds := segments(t, w)
		if len(ds) != 3 || int(ds[0].tcp.SrcPort) != 40001+f {
			t.Fatalf("write %d: %d segments of port %d", f, len(ds), ds[0].tcp.SrcPort)
		}
		for i, d := range ds {
			equalBytes(t, "payload", d.payload, tcpSeg(f+1, 0, mss).payload)
			if d.seq != uint32(f*1e6+i*mss) {
				t.Fatalf("flow %d segment %d: seq %d", f+1, i, d.seq)
			}
		}
	}
}

func TestCoalesceKeepsOutOfOrderSegmentsApart(t *testing.T) {
	pkts := [][]byte{build(t, tcpSeg(1, 0, mss)), build(t, tcpSeg(1, 2*mss, mss)), build(t, tcpSeg(1, mss, mss))}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 3 {
		t.Fatalf("%d writes, want 3 (nothing merged)", len(ws))
	}
	for i, want := range []uint32{0, 2 * mss, mss} {
		if d := segments(t, ws[i]); d[0].seq != want {
			t.Fatalf("write %d has seq %d, want %d: order within the flow changed", i, d[0].seq, want)
		}
	}
}

func seqs(t *testing.T, ws []write) [][]uint32 {
	var out [][]uint32
	for _, w := range ws {
		var s []uint32
		for _, d := range segments(t, w) {
			s = append(s, d.seq)
		}
		out = append(out, s)
	}
	return out
}

func equalSeqs(t *testing.T, got [][]uint32, want [][]uint32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("writes %v, want %v", got, want)
	}
	for i := range got {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("writes %v, want %v", got, want)
		}
		for j := range got[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("writes %v, want %v", got, want)
			}
		}
	}
}

func TestCoalescePSHEndsGroup(t *testing.T) {
	p2 := tcpSeg(1, mss, mss)
	p2.psh = true
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), [][]byte{
		build(t, tcpSeg(1, 0, mss)), build(t, p2), build(t, tcpSeg(1, 2*mss, mss)), build(t, tcpSeg(1, 3*mss, mss))})
	equalSeqs(t, seqs(t, ws), [][]uint32{{0, mss}, {2 * mss, 3 * mss}})
	if ds := segments(t, ws[0]); ds[0].tcp.PSH || !ds[1].tcp.PSH {
		t.Fatalf("PSH on segments: %t %t, want only on the last", ds[0].tcp.PSH, ds[1].tcp.PSH)
	}
}

func TestCoalesceFINAndPureACKAreNotMerged(t *testing.T) {
	// A pure ACK (say, a window update) between data segments ends the
	// group: data after it must not be merged into data before it.
	ack := tcpSeg(1, 2*mss, 0)
	fin := tcpSeg(1, 3*mss, mss)
	fin.fin = true
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), [][]byte{
		build(t, tcpSeg(1, 0, mss)), build(t, tcpSeg(1, mss, mss)), build(t, ack), build(t, tcpSeg(1, 2*mss, mss)), build(t, fin)})
	equalSeqs(t, seqs(t, ws), [][]uint32{{0, mss}, {2 * mss}, {2 * mss}, {3 * mss}})
	if ds := segments(t, ws[1]); len(ds[0].payload) != 0 {
		t.Fatalf("write 1 is not the pure ACK")
	}
	if !segments(t, ws[3])[0].tcp.FIN {
		t.Fatalf("FIN lost")
	}
}

func TestCoalesceShortSegmentEndsGroup(t *testing.T) {
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), [][]byte{
		build(t, tcpSeg(1, 0, mss)), build(t, tcpSeg(1, mss, 100)), build(t, tcpSeg(1, mss+100, mss)),
		build(t, tcpSeg(1, 2*mss+100, mss+1))}) // larger than the group's size: a new group
	equalSeqs(t, seqs(t, ws), [][]uint32{{0, mss}, {mss + 100}, {2*mss + 100}})
}

func TestCoalesceDifferentOptionsOrAckNotMerged(t *testing.T) {
	a, b := tcpSeg(1, mss, mss), tcpSeg(1, 2*mss, mss)
	a.tsVal = 100 // a new timestamp value
	b.tsVal, b.ack = 100, 6
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), [][]byte{build(t, tcpSeg(1, 0, mss)), build(t, a), build(t, b)})
	equalSeqs(t, seqs(t, ws), [][]uint32{{0}, {mss}, {2 * mss}})
}

func TestCoalesceBadChecksumPassesThroughUnmerged(t *testing.T) {
	bad := tcpSeg(1, mss, mss)
	bad.badL4Check = true
	pkts := [][]byte{build(t, tcpSeg(1, 0, mss)), build(t, bad), build(t, tcpSeg(1, 2*mss, mss)), build(t, tcpSeg(1, 3*mss, mss))}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 3 {
		t.Fatalf("%d writes, want 3", len(ws))
	}
	equalBytes(t, "corrupt packet", ws[1].pkt, pkts[1]) // left for the kernel to drop
	equalSeqs(t, seqs(t, []write{ws[0], ws[2]}), [][]uint32{{0}, {2 * mss, 3 * mss}})
}

func TestCoalesceUDP(t *testing.T) {
	var pkts [][]byte
	for i := range 4 {
		pkts = append(pkts, build(t, spec{udp: true, v6: true, payload: pattern(1200 - 300*(i/3))}))
	}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 4 {
		t.Fatalf("UDP off: %d writes, want 4", len(ws))
	}
	ws = coalesce(t, NewCoalescer(CoalescerOptions{UDP: true}), pkts)
	if len(ws) != 1 || ws[0].hdr.GSOType != packet.GSOUDPL4 || ws[0].hdr.GSOSize != 1200 {
		t.Fatalf("UDP on: %d writes, first %v", len(ws), ws[0].hdr)
	}
	ds := segments(t, ws[0])
	for i, d := range ds {
		equalBytes(t, "datagram", d.payload, pattern(1200-300*(i/3)))
	}
}

func TestCoalesceOtherPacketsPassThrough(t *testing.T) {
	garbage := []byte{0x45, 1, 2}
	syn := tcpSeg(1, 0, 0)
	syn.syn = true
	pkts := [][]byte{garbage, build(t, syn), build(t, spec{udp: true, payload: pattern(10)})}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 3 {
		t.Fatalf("%d writes, want 3", len(ws))
	}
	for i, w := range ws {
		if w.hdr != (packet.VirtioNetHdr{}) {
			t.Fatalf("write %d: header %v, want all zero", i, w.hdr)
		}
		equalBytes(t, "unchanged packet", w.pkt, pkts[i])
	}
}

func TestCoalesceStopsAtSizeOrSegmentLimit(t *testing.T) {
	var pkts [][]byte
	for i := range 50 { // 50*1448 > 65535: must be cut in two
		pkts = append(pkts, build(t, tcpSeg(1, uint32(i*mss), mss)))
	}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 2 || len(ws[0].pkt) > 65535 {
		t.Fatalf("%d writes, first %d bytes", len(ws), len(ws[0].pkt))
	}
	if n := len(segments(t, ws[0])) + len(segments(t, ws[1])); n != 50 {
		t.Fatalf("%d segments after the kernel splits, want 50", n)
	}

	pkts = pkts[:0]
	for i := range MaxSegments + 6 { // small segments: the count limit comes first
		pkts = append(pkts, build(t, tcpSeg(1, uint32(i*100), 100)))
	}
	ws = coalesce(t, NewCoalescer(CoalescerOptions{}), pkts)
	if len(ws) != 2 {
		t.Fatalf("%d writes, want 2", len(ws))
	}
	if a, b := len(segments(t, ws[0])), len(segments(t, ws[1])); a != MaxSegments || b != 6 {
		t.Fatalf("writes of %d and %d segments, want %d and 6", a, b, MaxSegments)
	}
}

func TestCoalesceCopiesNoPayload(t *testing.T) {
	pkts := clone([][]byte{build(t, tcpSeg(1, 0, mss)), build(t, tcpSeg(1, mss, mss)), build(t, tcpSeg(1, 2*mss, 100))})
	out := NewCoalescer(CoalescerOptions{}).Coalesce(pkts)
	if len(out) != 1 || len(out[0]) != 4 {
		t.Fatalf("%d writes, want one of 4 parts (header, head, 2 payloads)", len(out))
	}
	hdrLen := len(pkts[2]) - 100
	for i, p := range out[0][1:] {
		want := pkts[i]
		if i > 0 {
			want = want[hdrLen:]
		}
		if &p[0] != &want[0] || len(p) != len(want) {
			t.Fatalf("part %d is not packet %d's memory", i+1, i)
		}
	}
}

func TestCoalesceLargerBatchThanConfigured(t *testing.T) {
	var pkts [][]byte
	for i := range 20 {
		pkts = append(pkts, build(t, tcpSeg(i%5, uint32(i/5*mss), mss)))
	}
	ws := coalesce(t, NewCoalescer(CoalescerOptions{MaxBatch: 2}), pkts)
	if len(ws) != 5 {
		t.Fatalf("%d writes, want one per flow", len(ws))
	}
}

func TestCoalesceDoesNotAllocate(t *testing.T) {
	var pkts [][]byte
	for i := range 44 {
		pkts = append(pkts, build(t, tcpSeg(i%2, uint32(i/2*mss), mss)))
	}
	bufs := clone(pkts)
	c := NewCoalescer(CoalescerOptions{MaxBatch: 64})
	allocs := testing.AllocsPerRun(50, func() {
		for i, p := range pkts { // Coalesce rewrote the heads
			copy(bufs[i], p)
		}
		if out := c.Coalesce(bufs); len(out) != 2 {
			t.Fatalf("Coalesce = %d writes, want 2", len(out))
		}
	})
	if allocs != 0 {
		t.Fatalf("Coalesce allocates %.1f times per batch", allocs)
	}
}
