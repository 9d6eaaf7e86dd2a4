package trace

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/flannelu/flannelu/internal/drop"
)

func reportPkts(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkPacketOn is the forwarder's cost per packet with tracing on:
// a slot copy and two channel operations. The writer goroutine decodes in
// parallel; when it falls behind, records are dropped (reported as
// dropped/op) rather than slowing the forwarder.
func BenchmarkPacketOn(b *testing.B) {
	tr, err := New(Options{Out: io.Discard, Pcap: io.Discard, Rate: -1, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	pkt := tcpSYN(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.Packet(drop.Inside, pkt, peer, Forwarded)
	}
	b.StopTimer()
	reportPkts(b)
	b.ReportMetric(float64(tr.Dropped())/float64(b.N), "dropped/op")
	tr.Close()
}

// BenchmarkPacketOnPaced sends at a rate the writer keeps up with (one
// packet per 2µs) to measure Packet alone, with no drops.
func BenchmarkPacketOnPaced(b *testing.B) {
	tr, _ := New(Options{Out: io.Discard, Pcap: io.Discard, Rate: -1, Logger: quiet})
	pkt := tcpSYN(b)
	b.ReportAllocs()
	b.ResetTimer()
	var spent time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		tr.Packet(drop.Inside, pkt, peer, Forwarded)
		spent += time.Since(t0)
		for time.Since(t0) < 2*time.Microsecond {
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ns/packet")
	b.ReportMetric(float64(tr.Dropped())/float64(b.N), "dropped/op")
	tr.Close()
}

// BenchmarkPacketSlotCopy is Packet when a slot is always free: the
// writer goroutine is not started and the loop hands each slot straight
// back (one extra receive and send, included in ns/op). This is the
// forwarder's cost per traced packet, without scheduling noise.
func BenchmarkPacketSlotCopy(b *testing.B) {
	tr, err := newTracer(Options{Out: io.Discard, Rate: -1})
	if err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 1400) // a full-size packet: the copy dominates
	copy(pkt, tcpSYN(b))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for i := 0; i < b.N; i++ {
		tr.Packet(drop.Inside, pkt, peer, Forwarded)
		tr.free <- <-tr.full
	}
	reportPkts(b)
	if tr.Dropped() != 0 {
		b.Fatalf("%d packets dropped with a slot always free", tr.Dropped())
	}
}

// BenchmarkWriter is the writer goroutine's cost per record (decode, line,
// pcap), i.e. the packet rate tracing keeps up with before dropping.
func BenchmarkWriter(b *testing.B) {
	d := newDecoder()
	pkt := tcpSYN(b)
	r := record{ts: at, dir: drop.Inside, peer: peer, verdict: Forwarded, origLen: len(pkt), data: pkt}
	line := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line = d.appendLine(line[:0], &r)
	}
	reportPkts(b)
}

// BenchmarkPacketOff is the pattern when tracing is off: the forwarder's
// nil check. The tracer lives in a global so the compiler cannot prove
// it nil and delete the branch.
var offTracer *Tracer

func BenchmarkPacketOff(b *testing.B) {
	pkt := tcpSYN(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if tr := offTracer; tr != nil {
			tr.Packet(drop.Inside, pkt, peer, Forwarded)
		}
	}
	reportPkts(b)
}

// quiet drops the tracer's own log lines, which would break the benchmark
// output format.
var quiet = slog.New(slog.DiscardHandler)
