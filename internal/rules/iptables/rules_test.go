package iptables

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var (
	network  = netip.MustParsePrefix("198.18.0.0/16")
	lease    = netip.MustParsePrefix("198.18.40.0/24")
	network6 = netip.MustParsePrefix("2001:db8:100::/48")
	lease6   = netip.MustParsePrefix("2001:db8:100:28::/64")
)

// flanneld v0.28.9's rules, as written in its
// pkg/trafficmngr/iptables/iptables.go (masqRules, forwardRules) and as
// iptables -S prints them.
var (
	wantMasq = []string{
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.40.0/24 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.0.0/16 -d 198.18.40.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.40.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	}
	wantForward = []string{
		`-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
	}
)

// flanneld v0.28.9's IPv6 rules (its masqIP6Rules, and forwardRules with
// the IPv6 network), kept in ip6tables.
var (
	wantMasq6 = []string{
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 2001:db8:100:28::/64 -d 2001:db8:100::/48 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 2001:db8:100::/48 -d 2001:db8:100:28::/64 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 2001:db8:100::/48 -d 2001:db8:100:28::/64 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 2001:db8:100::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 2001:db8:100::/48 -d 2001:db8:100::/48 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	}
	wantForward6 = []string{
		`-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 2001:db8:100::/48 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 2001:db8:100::/48 -m comment --comment "flanneld forward" -j ACCEPT`,
	}
)

// flanneld v0.20.2's rules (its network/iptables.go: MasqRules,
// MasqIP6Rules, ForwardRules), which a node migrating from it holds: the
// jumps inserted first, one RETURN for the whole overlay, the two
// MASQUERADE rules apart. Printed with -I for the inserted jumps.
var (
	v020Masq = []string{
		`-I POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 198.18.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.40.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	}
	v020Forward = []string{
		`-I FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
	}
)

// v020Set is flanneld v0.20.2's set of like's kind from its rules as
// iptables -S prints them (network and lease replaced, and the multicast
// range for an IPv6 set), to install what a v0.20.2 node left.
func v020Set(like Set, rules []string, network, lease netip.Prefix) Set {
	mcast := multicast
	if like.IPv6 {
		mcast = multicastV6
	}
	r := strings.NewReplacer("198.18.0.0/16", network.String(), "198.18.40.0/24", lease.String(), "224.0.0.0/4", mcast)
	old := Set{Name: like.Name, Table: like.Table, Chain: like.Chain, IPv6: like.IPv6}
	for _, line := range rules {
		f := fields(r.Replace(line))
		old.Rules = append(old.Rules, Rule{Chain: f[1], Insert: f[0] == "-I", Spec: f[2:]})
	}
	return old
}

// fields splits a rule as iptables -S prints it into arguments; a quoted
// argument (a comment) is one.
func fields(line string) []string {
	var out []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		end := strings.IndexByte(line, ' ')
		if line[0] == '"' {
			end = strings.IndexByte(line[1:], '"') + 2
		}
		if end < 0 {
			end = len(line)
		}
		arg := line[:end]
		if unq, err := strconv.Unquote(arg); err == nil {
			arg = unq
		}
		out, line = append(out, arg), line[end:]
	}
	return out
}

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
	s.Rules[5].Spec[len(s.Rules[5].Spec)-1] = "changed"
	if got := s.Rules[6].String(); got != wantMasq[6] {
		t.Fatalf("changing rule 5 changed rule 6: %s", got)
	}
}

// The v0.20.2 sets the migration tests install are v0.20.2's rules.
func TestV020Sets(t *testing.T) {
	for _, tc := range []struct {
		set  Set
		want []string
	}{
		{v020Set(Masq(network, lease, true), v020Masq, network, lease), v020Masq},
		{v020Set(Forward(network), v020Forward, network, lease), v020Forward},
	} {
		if got := lines(tc.set); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.set.Name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
}
