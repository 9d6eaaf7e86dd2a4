package routetable

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

func peer(subnet, public string) Peer {
	return Peer{Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr(public), Port: 8285}
}

func a4(s string) [4]byte { return netip.MustParseAddr(s).As4() }

// lookupSubnet returns the matched subnet as a string, "" for a miss.
func lookupSubnet(s *Snapshot, dst string) string {
	p, ok := s.Lookup(a4(dst))
	if !ok {
		return ""
	}
	return p.Subnet.String()
}

func TestLookupLongestPrefix(t *testing.T) {
	tb := New()
	err := tb.Update([]Peer{
		peer("198.18.40.0/24", "192.0.2.1"),
		peer("198.18.41.0/24", "192.0.2.2"),
		peer("198.18.0.0/16", "192.0.2.3"),    // covers both /24s
		peer("198.18.40.128/25", "192.0.2.4"), // inside 198.18.40.0/24
		peer("198.18.40.200/32", "192.0.2.5"),
		peer("0.0.0.0/0", "192.0.2.6"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := tb.Snapshot()
	tests := map[string]string{
		"198.18.40.1":   "198.18.40.0/24",
		"198.18.40.127": "198.18.40.0/24",
		"198.18.40.128": "198.18.40.128/25",
		"198.18.40.200": "198.18.40.200/32",
		"198.18.40.201": "198.18.40.128/25",
		"198.18.41.9":   "198.18.41.0/24",
		"198.18.99.9":   "198.18.0.0/16",
		"198.19.0.1":    "0.0.0.0/0",
	}
	for dst, want := range tests {
		if got := lookupSubnet(s, dst); got != want {
			t.Errorf("Lookup(%s) = %q, want %q", dst, got, want)
		}
	}
	p, _ := s.Lookup(a4("198.18.41.3"))
	if p.PublicIP.As4() != a4("192.0.2.2") || p.AddrPort() != netip.MustParseAddrPort("192.0.2.2:8285") {
		t.Fatalf("peer endpoint %v", p.AddrPort())
	}
}

func TestLookupMissAndEmpty(t *testing.T) {
	tb := New()
	if _, ok := tb.Snapshot().Lookup(a4("198.18.0.1")); ok || tb.Snapshot().Len() != 0 {
		t.Fatal("empty table matched")
	}
	tb.Update([]Peer{peer("198.18.40.0/24", "192.0.2.1"), peer("198.18.42.0/24", "192.0.2.2")}, nil)
	for _, dst := range []string{"198.18.41.1", "198.18.39.255", "198.18.43.0", "203.0.113.1", "0.0.0.0", "255.255.255.255"} {
		if got := lookupSubnet(tb.Snapshot(), dst); got != "" {
			t.Errorf("Lookup(%s) = %s, want miss", dst, got)
		}
	}
}

func TestUpdateRemoveReplace(t *testing.T) {
	tb := New()
	tb.Update([]Peer{peer("198.18.40.0/24", "192.0.2.1"), peer("198.18.41.0/24", "192.0.2.2"), peer("198.18.0.0/16", "192.0.2.3")}, nil)
	before := tb.Snapshot()

	tb.Update(nil, []netip.Prefix{netip.MustParsePrefix("198.18.40.0/24")})
	s := tb.Snapshot()
	if got := lookupSubnet(s, "198.18.40.1"); got != "198.18.0.0/16" || s.Len() != 2 {
		t.Fatalf("after remove: %q, len %d", got, s.Len())
	}
	if _, ok := s.IsPeer(a4("192.0.2.1")); ok {
		t.Fatal("removed peer's public IP still known")
	}
	// The old snapshot is untouched by later updates.
	if got := lookupSubnet(before, "198.18.40.1"); got != "198.18.40.0/24" || before.Len() != 3 {
		t.Fatalf("old snapshot changed: %q len %d", got, before.Len())
	}

	// Changed lease: same subnet, new public IP; remove+add in one batch keeps it.
	tb.Update([]Peer{peer("198.18.41.0/24", "192.0.2.9")}, []netip.Prefix{netip.MustParsePrefix("198.18.41.0/24")})
	p, ok := tb.Snapshot().Lookup(a4("198.18.41.1"))
	if !ok || p.PublicIP != netip.MustParseAddr("192.0.2.9") {
		t.Fatalf("changed peer: %+v %v", p, ok)
	}

	tb.Replace([]Peer{peer("198.18.50.0/24", "198.51.100.5")})
	s = tb.Snapshot()
	if s.Len() != 1 || lookupSubnet(s, "198.18.41.1") != "" || lookupSubnet(s, "198.18.50.7") != "198.18.50.0/24" {
		t.Fatalf("after Replace: %v", s.Peers())
	}
	// An unmasked remove still removes.
	tb.Update(nil, []netip.Prefix{netip.MustParsePrefix("198.18.50.9/24"), {}})
	if tb.Snapshot().Len() != 0 {
		t.Fatal("unmasked prefix not removed")
	}
}

func TestUpdateRejectsInvalidPeers(t *testing.T) {
	tb := New()
	err := tb.Update([]Peer{
		peer("198.18.40.0/24", "192.0.2.1"),
		{Subnet: netip.MustParsePrefix("fc00::/64"), PublicIP: netip.MustParseAddr("192.0.2.2"), Port: 8285},
		{Subnet: netip.MustParsePrefix("198.18.41.0/24"), PublicIP: netip.MustParseAddr("2001:db8::1"), Port: 8285},
		{Subnet: netip.MustParsePrefix("198.18.42.0/24"), PublicIP: netip.MustParseAddr("0.0.0.0"), Port: 8285},
		{Subnet: netip.MustParsePrefix("198.18.43.0/24"), PublicIP: netip.MustParseAddr("192.0.2.3")}, // no port: an IPIP peer
		{PublicIP: netip.MustParseAddr("192.0.2.4"), Port: 8285},
		peer("198.18.44.7/24", "::ffff:192.0.2.5"), // unmasked and 4in6: accepted, normalized
	}, nil)
	if !errors.Is(err, ErrInvalidPeer) {
		t.Fatalf("err = %v, want ErrInvalidPeer", err)
	}
	s := tb.Snapshot()
	if s.Len() != 3 {
		t.Fatalf("len %d, want the 3 valid peers: %v", s.Len(), s.Peers())
	}
	if p, ok := s.Lookup(a4("198.18.43.9")); !ok || p.AddrPort() != netip.MustParseAddrPort("192.0.2.3:0") {
		t.Fatalf("the IPIP peer (no port): %v, %v", p, ok)
	}
	p, ok := s.Lookup(a4("198.18.44.1"))
	if !ok || p.Subnet.String() != "198.18.44.0/24" || p.PublicIP.String() != "192.0.2.5" || p.PublicIP.As4() != a4("192.0.2.5") {
		t.Fatalf("normalized peer: %+v", p)
	}
	if err := tb.Update([]Peer{peer("198.18.45.0/24", "192.0.2.6")}, nil); err != nil {
		t.Fatalf("valid update: %v", err)
	}
}

func TestIsPeer(t *testing.T) {
	tb := New()
	tb.Replace([]Peer{
		peer("198.18.41.0/24", "192.0.2.7"),
		peer("198.18.40.0/24", "192.0.2.7"), // a stale second lease of the same host
		peer("198.18.42.0/24", "203.0.113.20"),
	})
	s := tb.Snapshot()
	p, ok := s.IsPeer(a4("192.0.2.7"))
	if !ok || p.Subnet.String() != "198.18.40.0/24" {
		t.Fatalf("IsPeer(192.0.2.7) = %+v %v, want the lowest subnet", p, ok)
	}
	if p, ok := s.IsPeer(a4("203.0.113.20")); !ok || p.Subnet.String() != "198.18.42.0/24" {
		t.Fatalf("IsPeer(203.0.113.20) = %+v %v", p, ok)
	}
	for _, src := range []string{"192.0.2.8", "198.18.40.1", "0.0.0.0"} {
		if _, ok := s.IsPeer(a4(src)); ok {
			t.Errorf("IsPeer(%s) = true", src)
		}
	}
}

func TestDenseAndSparseLevelsAgree(t *testing.T) {
	// 198.18.0.0/15 cut into /24s is dense; /24s spread across the whole
	// IPv4 space (only possible in a synthetic table) force the map.
	dense, sparse := New(), New()
	var dp, sp []Peer
	for i := 0; i < 300; i++ {
		dp = append(dp, peer(fmt.Sprintf("198.%d.%d.0/24", 18+i/256, i%256), "192.0.2.1"))
		sp = append(sp, peer(fmt.Sprintf("%d.%d.0.0/24", 1+i%200, i/200), "192.0.2.1"))
	}
	dense.Replace(dp)
	sparse.Replace(sp)
	if dense.Snapshot().levels[0].dense == nil || sparse.Snapshot().levels[0].sparse == nil {
		t.Fatal("test tables do not exercise both level kinds")
	}
	for i, p := range dp {
		if got := lookupSubnet(dense.Snapshot(), p.Subnet.Addr().Next().String()); got != p.Subnet.String() {
			t.Fatalf("dense %d: %q", i, got)
		}
	}
	for i, p := range sp {
		if got := lookupSubnet(sparse.Snapshot(), p.Subnet.Addr().Next().String()); got != p.Subnet.String() {
			t.Fatalf("sparse %d: %q", i, got)
		}
	}
	if lookupSubnet(sparse.Snapshot(), "201.0.0.1") != "" || lookupSubnet(dense.Snapshot(), "198.19.100.1") != "" {
		t.Fatal("miss matched")
	}
}

// TestConcurrentReadersSeeConsistentSnapshots: a writer publishes
// generation g as size(g) peers (growing and shrinking, so a writer that
// reused an old snapshot's memory would be caught) that all carry public
// IP 192.0.2.(g%200+1).
// Every snapshot a reader takes must be exactly one generation: its Len,
// every lookup and IsPeer agree. Run under -race.
func TestConcurrentReadersSeeConsistentSnapshots(t *testing.T) {
	tb := New()
	size := func(g int) int { return (g*37)%50 + 1 } // depends on g%200 only
	gen := func(g int) []Peer {
		ps := make([]Peer, size(g))
		for i := range ps {
			ps[i] = peer(fmt.Sprintf("198.18.%d.0/24", i), fmt.Sprintf("192.0.2.%d", g%200+1))
		}
		return ps
	}
	tb.Replace(gen(0))
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for !stop.Load() {
				s := tb.Snapshot()
				first, ok := s.Lookup(a4("198.18.0.1"))
				if !ok {
					t.Error("snapshot without its first peer")
					return
				}
				g := int(first.PublicIP.As4()[3]) - 1
				if s.Len() != size(g) {
					t.Errorf("snapshot of generation %d has %d peers, want %d", g, s.Len(), size(g))
					return
				}
				for i := 0; i < s.Len(); i++ {
					p, ok := s.Lookup([4]byte{198, 18, byte(i), 9})
					if !ok || p.PublicIP.As4() != first.PublicIP.As4() {
						t.Errorf("snapshot mixes generations at peer %d", i)
						return
					}
				}
				if _, ok := s.Lookup([4]byte{198, 18, byte(s.Len()), 9}); ok {
					t.Error("snapshot has more peers than its Len")
					return
				}
				if _, ok := s.IsPeer(first.PublicIP.As4()); !ok {
					t.Error("IsPeer disagrees with Lookup")
					return
				}
			}
		})
	}
	for g := 1; g <= 2000; g++ {
		if g%2 == 0 {
			tb.Replace(gen(g))
		} else {
			// Update path: remove all, add the next generation.
			var rm []netip.Prefix
			for _, p := range tb.Snapshot().Peers() {
				rm = append(rm, p.Subnet)
			}
			tb.Update(gen(g), rm)
		}
	}
	stop.Store(true)
	wg.Wait()
}

func TestLookupAllocatesNothing(t *testing.T) {
	tb := New()
	var ps []Peer
	for i := 0; i < 100; i++ {
		ps = append(ps, peer(fmt.Sprintf("198.18.%d.0/24", i), fmt.Sprintf("192.0.2.%d", i+1)))
	}
	ps = append(ps, peer("198.18.0.0/16", "192.0.2.200"), peer("1.2.3.0/24", "192.0.2.201"))
	tb.Replace(ps)
	s := tb.Snapshot()
	var hits int
	allocs := testing.AllocsPerRun(1000, func() {
		s := tb.Snapshot()
		if _, ok := s.Lookup([4]byte{198, 18, 7, 1}); ok {
			hits++
		}
		if _, ok := s.Lookup([4]byte{198, 19, 7, 1}); ok {
			hits += 100
		}
		if _, ok := s.IsPeer([4]byte{192, 0, 2, 9}); ok {
			hits++
		}
	})
	if allocs != 0 {
		t.Fatalf("Lookup/IsPeer: %v allocs, want 0", allocs)
	}
	if hits != 2*1001 || s.Len() != 102 {
		t.Fatalf("hits %d", hits)
	}
}
