package subnet

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestIncrementalResolveMatchesFull feeds random joins, rewrites and
// deletions of nested and equal podCIDRs (Kubernetes mode: any length) to
// a validator in batches of random size, and checks after every batch
// that what the backends were told adds up to what a validator ranking
// every lease from scratch accepts: the fast path for batches that touch
// no contested subnet must decide as the full ranking does.
func TestIncrementalResolveMatchesFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		v, _ := validatorFor(t, kubeV4Config)
		told := map[string]Lease{} // what the backends were told, replayed
		live := map[string]Lease{}
		for batch := range 40 {
			var evs []Event
			for range 1 + rng.IntN(5) {
				key := fmt.Sprintf("node-%d", rng.IntN(30))
				if _, ok := live[key]; ok && rng.IntN(3) == 0 {
					evs = append(evs, Event{Type: EventRemoved, Lease: live[key], Key: key})
					delete(live, key)
					continue
				}
				// Public IPs never this host's (an invalid write keeps the last
				// valid value, which the model here does not follow). Mostly
				// disjoint /24s in 198.18.8-63; sometimes a /22 or
				// /23 over some of them, or a copy of another's.
				bits := []int{24, 24, 24, 24, 23, 22}[rng.IntN(6)]
				third := 8 + rng.IntN(56)
				sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(third), 0}), bits).Masked()
				l := Lease{Subnet: sn, Attrs: attrs(fmt.Sprintf("192.0.2.%d", 10+rng.IntN(80))), Created: int64(rng.IntN(1000))}
				typ := EventAdded
				if _, ok := live[key]; ok {
					typ = EventChanged
				}
				live[key] = l
				evs = append(evs, Event{Type: typ, Lease: l, Key: key})
			}
			for _, ev := range v.Filter(evs) {
				if ev.Type == EventRemoved {
					delete(told, ev.Key)
				} else {
					told[ev.Key] = ev.Lease
				}
			}
			full, _ := validatorFor(t, kubeV4Config)
			var all []Event
			for k, l := range live {
				all = append(all, Event{Type: EventAdded, Lease: l, Key: k})
			}
			full.Filter(all)
			if !maps.EqualFunc(told, full.accepted, func(a, b Lease) bool { return a.Subnet == b.Subnet && a.Attrs.Equal(b.Attrs) }) {
				t.Fatalf("round %d batch %d: the backends were told\n%v\nranking everything accepts\n%v", round, batch, told, full.accepted)
			}
			if !maps.Equal(v.held.held, full.held.held) || !maps.Equal(v.held.around, full.held.around) {
				t.Fatalf("round %d batch %d: held subnets differ from a fresh ranking's", round, batch)
			}
		}
	}
}

// BenchmarkJoinInto5000 is one peer joining (and leaving) a cluster of
// 5,000: the validator's cost per event in a burst.
func BenchmarkJoinInto5000(b *testing.B) {
	v, _ := validatorFor(b, `{"Network":"198.18.0.0/16","SubnetLen":29}`)
	var all []Event
	for i := range 5000 {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(100 + i/32), byte(i % 32 * 8)}), 29)
		all = append(all, Event{Type: EventAdded, Lease: Lease{Subnet: sn, Attrs: attrs("192.0.2.50"), Created: int64(i)}, Key: fmt.Sprint(i)})
	}
	v.Filter(all)
	join := Event{Type: EventAdded, Lease: Lease{Subnet: netip.MustParsePrefix("198.18.90.8/29"), Attrs: attrs("192.0.2.51"), Created: 9999}, Key: "new"}
	b.ResetTimer()
	for range b.N {
		if evs := v.Filter([]Event{join}); len(evs) != 1 {
			b.Fatal(evs)
		}
		if evs := v.Filter([]Event{del(join)}); len(evs) != 1 {
			b.Fatal(evs)
		}
	}
}
