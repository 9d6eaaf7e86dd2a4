package routetable

import (
	"fmt"
	"net/netip"
	"testing"
)

// peersIn returns n distinct /28 peers packed from 198.18.0.0 (8192 fit in
// the overlay range 198.18.0.0/15), each with its own public IP.
func peersIn(n int) []Peer {
	if n > 8192 {
		panic("more peers than /28s in 198.18.0.0/15")
	}
	ps := make([]Peer, n)
	for i := range ps {
		base := uint32(198)<<24 + 18<<16 + uint32(i)<<4
		a := netip.AddrFrom4([4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)})
		ps[i] = Peer{
			Subnet:   netip.PrefixFrom(a, 28),
			PublicIP: netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}),
			Port:     8285,
		}
	}
	return ps
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		tb := New()
		if err := tb.Replace(peersIn(n)); err != nil || tb.Snapshot().Len() != n {
			b.Fatalf("table of %d peers: %v", tb.Snapshot().Len(), err)
		}
		dsts := make([][4]byte, 256)
		for i := range dsts {
			p := peersIn(n)[(i*7919)%n]
			dsts[i] = p.Subnet.Addr().Next().As4()
		}
		b.Run(fmt.Sprintf("peers=%d/hit", n), func(b *testing.B) {
			s := tb.Snapshot()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := s.Lookup(dsts[i&255]); !ok {
					b.Fatal("miss")
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
		b.Run(fmt.Sprintf("peers=%d/miss", n), func(b *testing.B) {
			s := tb.Snapshot()
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.Lookup([4]byte{203, 0, 113, 9}); ok {
					b.Fatal("hit")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
	}
}

// BenchmarkLookupSparse is the map fallback: subnets scattered so no dense
// array fits.
func BenchmarkLookupSparse(b *testing.B) {
	ps := make([]Peer, 5000)
	for i := range ps {
		ps[i] = Peer{
			Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + i%200), byte(i / 200), byte(i), 0}), 24),
			PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, 1}), Port: 8285,
		}
	}
	tb := New()
	if err := tb.Replace(ps); err != nil || tb.Snapshot().Len() != len(ps) {
		b.Fatalf("table of %d peers: %v", tb.Snapshot().Len(), err)
	}
	s := tb.Snapshot()
	if s.levels[0].sparse == nil {
		b.Fatal("table is not sparse")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := s.Lookup(ps[i%5000].Subnet.Addr().As4()); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

func BenchmarkIsPeer(b *testing.B) {
	for _, n := range []int{10, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			ps := peersIn(n)
			tb := New()
			if err := tb.Replace(ps); err != nil || tb.Snapshot().Len() != n {
				b.Fatalf("table of %d peers: %v", tb.Snapshot().Len(), err)
			}
			s := tb.Snapshot()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := s.IsPeer(ps[i%n].PublicIP.As4()); !ok {
					b.Fatal("unknown")
				}
				i++
			}
		})
	}
}

// BenchmarkUpdate is one watcher event (one peer changed) on a table of n
// peers: the cost of copying into a new snapshot.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			ps := peersIn(n)
			tb := New()
			if err := tb.Replace(ps); err != nil || tb.Snapshot().Len() != n {
				b.Fatalf("table of %d peers: %v", tb.Snapshot().Len(), err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := ps[i%n]
				p.Port = uint16(8000 + i%100)
				if err := tb.Update([]Peer{p}, nil); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
