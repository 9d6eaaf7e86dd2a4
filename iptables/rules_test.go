package iptables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var (
	network  = netip.MustParsePrefix("198.18.0.0/16")
	lease    = netip.MustParsePrefix("198.18.40.0/24")
	network6 = netip.MustParsePrefix("2001:db8:100::/48")
	lease6   = netip.MustParsePrefix("2001:db8:100:28::/64")
)

// flanneld v0.20.2's rules, as written in its network/iptables.go and as
// iptables -S prints them (with -I for the inserted jump).
var (
	wantMasq = []string{
		`-I POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.40.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	}
	wantForward = []string{
		`-I FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
	}
)

// flanneld v0.20.2's IPv6 rules (its MasqIP6Rules, and ForwardRules with
// the IPv6 network), kept in ip6tables.
var (
	wantMasq6 = []string{
		`-I POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 2001:db8:100::/48 -d 2001:db8:100::/48 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 2001:db8:100::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 2001:db8:100::/48 -d 2001:db8:100:28::/64 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 2001:db8:100::/48 -d 2001:db8:100::/48 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	}
	wantForward6 = []string{
		`-I FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 2001:db8:100::/48 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 2001:db8:100::/48 -m comment --comment "flanneld forward" -j ACCEPT`,
	}
)

func lines(s Set) []string {
	var out []string
	for _, r := range s.Rules {
		out = append(out, r.String())
	}
	return out
}

func withoutRandomFully(rules []string) []string {
	var out []string
	for _, r := range rules {
		out = append(out, strings.TrimSuffix(r, " --random-fully"))
	}
	return out
}

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name         string
		set          Set
		table, chain string
		want         []string
	}{
		{"masq with random-fully", Masq(network, lease, true), "nat", MasqChain, wantMasq},
		{"masq without random-fully", Masq(network, lease, false), "nat", MasqChain, withoutRandomFully(wantMasq)},
		{"forward", Forward(network), "filter", ForwardChain, wantForward},
		{"ipv6 masq", Masq(network6, lease6, true), "nat", MasqChain, wantMasq6},
		{"ipv6 masq without random-fully", Masq(network6, lease6, false), "nat", MasqChain, withoutRandomFully(wantMasq6)},
		{"ipv6 forward", Forward(network6), "filter", ForwardChain, wantForward6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set.Table != tc.table || tc.set.Chain != tc.chain {
				t.Errorf("table %s chain %s, want %s %s", tc.set.Table, tc.set.Chain, tc.table, tc.chain)
			}
			if v6 := strings.HasPrefix(tc.name, "ipv6"); tc.set.IPv6 != v6 || strings.HasPrefix(tc.set.Name, "ipv6 ") != v6 {
				t.Errorf("set %q IPv6=%v, want an IPv6 set named so: %v", tc.set.Name, tc.set.IPv6, v6)
			}
			if got := lines(tc.set); !slices.Equal(got, tc.want) {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// The two masquerade targets must not share a backing array: appending to
// one spec would otherwise rewrite the other.
func TestMasqSpecsIndependent(t *testing.T) {
	s := Masq(network, lease, true)
	s.Rules[3].Spec[len(s.Rules[3].Spec)-1] = "changed"
	if got := s.Rules[5].String(); got != wantMasq[5] {
		t.Fatalf("changing rule 3 changed rule 5: %s", got)
	}
}
