package routetable

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func a16(s string) [16]byte { return netip.MustParseAddr(s).As16() }

// peer6 is an IPv6-only peer; dual adds an IPv4 subnet and public IP.
func peer6(subnet6, public6 string) Peer {
	return Peer{Subnet6: netip.MustParsePrefix(subnet6), PublicIPv6: netip.MustParseAddr(public6), Port: 8285}
}

func dual(subnet, public, subnet6, public6 string) Peer {
	p := peer(subnet, public)
	p.Subnet6 = netip.MustParsePrefix(subnet6)
	if public6 != "" {
		p.PublicIPv6 = netip.MustParseAddr(public6)
	}
	return p
}

func lookup6Subnet(s *Snapshot, dst string) string {
	p, ok := s.Lookup6(a16(dst))
	if !ok {
		return ""
	}
	return p.Subnet6.String()
}

func TestLookup6LongestPrefix(t *testing.T) {
	tb := New()
	err := tb.Update([]Peer{
		dual("198.18.1.0/24", "192.0.2.1", "2001:db8:100:1::/64", "2001:db8:0:1::1"),
		dual("198.18.2.0/24", "192.0.2.2", "2001:db8:100:2::/64", ""), // no IPv6 underlay
		peer6("2001:db8:100:3::/64", "2001:db8:0:1::3"),
		peer6("2001:db8:100:3:8000::/65", "2001:db8:0:1::4"),
		peer6("2001:db8:100:3::99/128", "2001:db8:0:1::5"),
		peer6("2001:db8:100::/48", "2001:db8:0:1::6"),
		peer6("::/0", "2001:db8:0:1::7"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := tb.Snapshot()
	tests := map[string]string{
		"2001:db8:100:1::5":         "2001:db8:100:1::/64",
		"2001:db8:100:2:ffff::1":    "2001:db8:100:2::/64",
		"2001:db8:100:3::1":         "2001:db8:100:3::/64",
		"2001:db8:100:3:8000::1":    "2001:db8:100:3:8000::/65",
		"2001:db8:100:3::99":        "2001:db8:100:3::99/128",
		"2001:db8:100:3::98":        "2001:db8:100:3::/64",
		"2001:db8:100:ffff::1":      "2001:db8:100::/48",
		"2001:db8:101::1":           "::/0",
		"::ffff:198.18.1.1":         "::/0", // 4in6 is an IPv6 address here
		"2001:db8:100:4:1:2:3:4":    "2001:db8:100::/48",
		"2001:db8:100:3:7fff::ffff": "2001:db8:100:3::/64",
	}
	for dst, want := range tests {
		if got := lookup6Subnet(s, dst); got != want {
			t.Errorf("Lookup6(%s) = %q, want %q", dst, got, want)
		}
	}
	// The dual-stack peer is one entry, found by either family.
	p4, _ := s.Lookup(a4("198.18.1.9"))
	p6, _ := s.Lookup6(a16("2001:db8:100:1::9"))
	if p4 != p6 || p6.AddrPort6() != netip.MustParseAddrPort("[2001:db8:0:1::1]:8285") || p6.PublicIPv6.As16() != a16("2001:db8:0:1::1") {
		t.Fatalf("dual-stack peer: %+v / %+v", p4, p6)
	}
	if s.Len() != 7 {
		t.Fatalf("Len %d", s.Len())
	}
}

func TestUpdate6RemovesByID(t *testing.T) {
	tb := New()
	tb.Replace([]Peer{
		dual("198.18.1.0/24", "192.0.2.1", "2001:db8:100:1::/64", "2001:db8:0:1::1"),
		peer6("2001:db8:100:3::/64", "2001:db8:0:1::3"),
	})
	// An IPv6-only peer is named by its IPv6 subnet, a dual-stack one by
	// its IPv4 subnet.
	tb.Update(nil, []netip.Prefix{netip.MustParsePrefix("2001:db8:100:3::1/64"), netip.MustParsePrefix("198.18.1.0/24")})
	s := tb.Snapshot()
	if s.Len() != 0 || lookup6Subnet(s, "2001:db8:100:1::1") != "" || lookup6Subnet(s, "2001:db8:100:3::1") != "" {
		t.Fatalf("after removal: %v", s.Peers())
	}
	if _, ok := s.IsPeer6(a16("2001:db8:0:1::1")); ok {
		t.Fatal("removed peer still IsPeer6")
	}
	// A changed dual-stack lease (new IPv6 public) replaces the old entry.
	tb.Update([]Peer{dual("198.18.1.0/24", "192.0.2.1", "2001:db8:100:1::/64", "2001:db8:0:1::1")}, nil)
	tb.Update([]Peer{dual("198.18.1.0/24", "192.0.2.1", "2001:db8:100:1::/64", "2001:db8:0:1::9")}, nil)
	s = tb.Snapshot()
	if p, ok := s.IsPeer6(a16("2001:db8:0:1::9")); !ok || s.Len() != 1 || p.Subnet.String() != "198.18.1.0/24" {
		t.Fatalf("after change: %v", s.Peers())
	}
}

func TestUpdate6RejectsInvalidPeers(t *testing.T) {
	tb := New()
	err := tb.Update([]Peer{
		{Subnet6: netip.MustParsePrefix("198.18.9.0/24"), PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1"), Port: 8285},
		{Subnet6: netip.MustParsePrefix("2001:db8:100:5::/64"), PublicIPv6: netip.MustParseAddr("::ffff:192.0.2.1"), Port: 8285},
		{Subnet6: netip.MustParsePrefix("2001:db8:100:6::/64"), PublicIPv6: netip.MustParseAddr("::"), Port: 8285},
		{Subnet6: netip.MustParsePrefix("2001:db8:100:7::/64"), Port: 8285}, // no public address
		peer6("2001:db8:100:9::1/64", "2001:db8:0:1::9"),                    // unmasked: accepted, masked
	}, nil)
	if !errors.Is(err, ErrInvalidPeer) {
		t.Fatalf("err = %v, want ErrInvalidPeer", err)
	}
	s := tb.Snapshot()
	if s.Len() != 1 || lookup6Subnet(s, "2001:db8:100:9::5") != "2001:db8:100:9::/64" {
		t.Fatalf("peers %v", s.Peers())
	}
}

func TestIsPeer6(t *testing.T) {
	tb := New()
	tb.Replace([]Peer{
		peer6("2001:db8:100:2::/64", "2001:db8:0:1::7"),
		peer6("2001:db8:100:1::/64", "2001:db8:0:1::7"), // a stale second lease of the same host
		dual("198.18.1.0/24", "192.0.2.1", "2001:db8:100:3::/64", "2001:db8:0:1::1"),
	})
	s := tb.Snapshot()
	if p, ok := s.IsPeer6(a16("2001:db8:0:1::7")); !ok || p.Subnet6.String() != "2001:db8:100:1::/64" {
		t.Fatalf("IsPeer6 = %+v %v, want the lowest subnet", p, ok)
	}
	if p, ok := s.IsPeer6(a16("2001:db8:0:1::1")); !ok || p.Subnet.String() != "198.18.1.0/24" {
		t.Fatalf("IsPeer6 dual = %+v %v", p, ok)
	}
	for _, src := range []string{"2001:db8:0:1::8", "::", "::ffff:192.0.2.1"} {
		if _, ok := s.IsPeer6(a16(src)); ok {
			t.Errorf("IsPeer6(%s) = true", src)
		}
	}
	// IPv6-only peers have no IPv4 public address to match.
	if _, ok := s.IsPeer([4]byte{}); ok {
		t.Fatal("IsPeer(0.0.0.0) matched an IPv6-only peer")
	}
}

// TestDense6AndSparse6Agree builds the same /64 subnets once close
// together (dense) and once scattered (sparse) and checks both answer.
func TestDense6AndSparse6Agree(t *testing.T) {
	for _, spread := range []int{1, 1 << 20} {
		var ps []Peer
		for i := 0; i < 50; i++ {
			k := i * spread
			ps = append(ps, peer6(fmt.Sprintf("2001:db8:%x:%x::/64", 0x100+k>>16, k&0xffff), fmt.Sprintf("2001:db8:0:1::%x", i+1)))
		}
		tb := New()
		tb.Replace(ps)
		s := tb.Snapshot()
		if dense := s.v6.levels[0].dense != nil; dense != (spread == 1) {
			t.Fatalf("spread %d: dense = %v", spread, dense)
		}
		for _, p := range ps {
			dst := p.Subnet6.Addr().As16()
			dst[15] = 7
			if got, ok := s.Lookup6(dst); !ok || got.Subnet6 != p.Subnet6 {
				t.Fatalf("spread %d: Lookup6 in %v = %v %v", spread, p.Subnet6, got, ok)
			}
		}
		if _, ok := s.Lookup6(a16("2001:db8:ffff::1")); ok {
			t.Fatalf("spread %d: hit outside every subnet", spread)
		}
	}
}

func TestLookup6AllocatesNothing(t *testing.T) {
	tb := New()
	var ps []Peer
	for i := 0; i < 100; i++ {
		ps = append(ps, dual(fmt.Sprintf("198.18.%d.0/24", i), fmt.Sprintf("192.0.2.%d", i+1),
			fmt.Sprintf("2001:db8:100:%x::/64", i), fmt.Sprintf("2001:db8:0:1::%x", i+1)))
	}
	tb.Replace(append(ps, peer6("2001:db8:100:5:1::/80", "2001:db8:0:1::ff")))
	hits := 0
	allocs := testing.AllocsPerRun(1000, func() {
		s := tb.Snapshot()
		if _, ok := s.Lookup6(a16("2001:db8:100:7::1")); ok {
			hits++
		}
		if _, ok := s.Lookup6(a16("2001:db8:100:5:1::1")); ok {
			hits++
		}
		if _, ok := s.IsPeer6(a16("2001:db8:0:1::9")); ok {
			hits++
		}
	})
	if allocs != 0 || hits != 3*1001 {
		t.Fatalf("Lookup6/IsPeer6: %v allocs, %d hits", allocs, hits)
	}
}

func BenchmarkLookup6(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		ps := make([]Peer, n)
		for i := range ps {
			ps[i] = peer6(fmt.Sprintf("2001:db8:100:%x::/64", i), fmt.Sprintf("2001:db8:0:1::%x", i+1))
		}
		tb := New()
		tb.Replace(ps)
		s := tb.Snapshot()
		dsts := make([][16]byte, 256)
		for i := range dsts {
			dsts[i] = ps[(i*7919)%n].Subnet6.Addr().Next().As16()
		}
		b.Run(fmt.Sprintf("peers=%d/hit", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := s.Lookup6(dsts[i&255]); !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}
