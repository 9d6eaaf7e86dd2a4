package udp

import (
	"net/netip"
	"testing"

	"github.com/flannelu/flannelu/encap"
)

// BenchmarkInsidePacket is the per-packet work of encapsulation (TUN to
// UDP) without the system calls: validate, route lookup, TTL, queue the
// datagram for the peer.
func BenchmarkInsidePacket(b *testing.B) {
	in := deviceless(b).in
	pkt := innerPacket(b, "198.18.1.7", "198.18.2.5", 1400)
	header := append([]byte(nil), pkt[:20]...)
	snap := in.routes.Snapshot()
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		copy(pkt, header) // restore the TTL and checksum the last round changed
		in.nout = [2]int{}
		in.queue(pkt, snap)
		if in.queued() != 1 {
			b.Fatal("not forwarded")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkOutsidePacket is the per-packet work of decapsulation (UDP to
// TUN) without the system calls: peer check, validate, own subnet, inner
// source, TTL.
func BenchmarkOutsidePacket(b *testing.B) {
	o := deviceless(b).out
	orig := innerPacket(b, "198.18.2.5", "198.18.1.7", 1400)
	pkt := make([]byte, len(orig))
	m := &encap.Message{Addr: netip.MustParseAddrPort("192.0.2.2:8285")}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		copy(pkt[:20], orig[:20]) // restore the TTL and checksum
		if _, ok := o.routes.Snapshot().IsPeer(m.Addr.Addr().As4()); !ok {
			b.Fatal("unknown peer")
		}
		if _, ok := o.acceptInner(pkt, m, o.routes.Snapshot()); !ok {
			b.Fatal("not accepted")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkSourceCheck is the inner-source check alone: one route-table
// lookup and a compare.
func BenchmarkSourceCheck(b *testing.B) {
	o := deviceless(b).out
	snap := o.routes.Snapshot()
	var h inner
	if err := h.parse(innerPacket(b, "198.18.2.5", "198.18.1.7", 100), false); err != nil {
		b.Fatal(err)
	}
	from := netip.MustParseAddr("192.0.2.2")
	b.ReportAllocs()
	for b.Loop() {
		if !o.sourceOK(&h, from, snap) {
			b.Fatal("refused")
		}
	}
}
