package offload

import (
	"testing"
)

// BenchmarkSplitTSO4 splits a 64 KiB-class TSO4 super-packet (44 segments of
// 1448 bytes, as a TUN read delivers for a bulk TCP send) into wire packets:
// 44 header slots written and every payload byte read once for its
// checksum, none copied.
func BenchmarkSplitTSO4(b *testing.B) {
	pkt, h := superPacket(b, spec{tsVal: 1, payload: pattern(44 * mss)}, mss)
	pkt = pkt[:len(pkt):len(pkt)]
	heads, payloads := headSlots(64), make([][]byte, 64)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	segs := 0
	for b.Loop() {
		n, err := Split(pkt, h, heads, payloads)
		if err != nil {
			b.Fatal(err)
		}
		segs += n
	}
	b.ReportMetric(float64(segs)/b.Elapsed().Seconds(), "segments/s")
}

// BenchmarkCoalesce merges 44 in-order segments of one flow into one
// super-packet. Each iteration first restores the head packet, which the
// previous Coalesce rewrote (about 1.5 KB copied, included in the time).
func BenchmarkCoalesce(b *testing.B) {
	var pkts [][]byte
	for i := range 44 {
		pkts = append(pkts, build(b, tcpSeg(1, uint32(i*mss), mss)))
	}
	bufs := clone(pkts)
	c := NewCoalescer(CoalescerOptions{MaxBatch: 64})
	total := 0
	for _, p := range pkts {
		total += len(p)
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	batches := 0
	for b.Loop() {
		batches++
		copy(bufs[0], pkts[0])
		if out := c.Coalesce(bufs); len(out) != 1 {
			b.Fatalf("Coalesce = %d writes, want 1", len(out))
		}
	}
	b.ReportMetric(float64(44*batches)/b.Elapsed().Seconds(), "pkts/s")
}
