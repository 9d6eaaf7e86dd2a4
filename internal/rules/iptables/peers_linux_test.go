package iptables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// wantPeers is iptables -S of the filter table with the peer filter for
// port 8285 and peers in place, after newNamespace's foreign rules.
func wantPeers(peers ...string) []string {
	out := []string{"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT", "-N FLANNELU-PEERS",
		`-A INPUT -p udp -m udp --dport 8285 -m comment --comment "flannelu peers" -j FLANNELU-PEERS`,
		foreignFwd}
	for _, p := range peers {
		out = append(out, `-A FLANNELU-PEERS -s `+p+`/32 -m comment --comment "flannelu peers" -j RETURN`)
	}
	return append(out, `-A FLANNELU-PEERS -m comment --comment "flannelu peers" -j DROP`)
}

func filterTable(t *testing.T, ns testbed.NS) []string {
	t.Helper()
	return strings.Split(strings.TrimSpace(ns.Exec(t, "iptables", "-S")), "\n")
}

// The peer filter follows the peers rule by rule, clears out rules that
// are not its own, and Purge takes it away whole.
func TestPeerFilter(t *testing.T) {
	ns := newNamespace(t)
	check := func(step string, want []string) {
		t.Helper()
		if got := filterTable(t, ns); !slices.Equal(got, want) {
			t.Fatalf("%s: iptables -S:\n%s\nwant:\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	inNS(t, ns, Options{}, func(r *Runner) error {
		if err := r.Update(Peers(8285, nil)); err != nil {
			return err
		}
		check("no peers yet", wantPeers())
		if err := r.Update(Peers(8285, addrs("192.0.2.2", "192.0.2.3"))); err != nil {
			return err
		}
		check("two peers", wantPeers("192.0.2.2", "192.0.2.3"))
		if err := r.Update(Peers(8285, addrs("192.0.2.3", "192.0.2.4"))); err != nil {
			return err
		}
		check("one gone, one new", wantPeers("192.0.2.3", "192.0.2.4"))
		// Another port: the new jump replaces the old one.
		if err := r.Update(Peers(8472, addrs("192.0.2.3", "192.0.2.4"))); err != nil {
			return err
		}
		check("another port", slices.Replace(wantPeers("192.0.2.3", "192.0.2.4"), 4, 5,
			`-A INPUT -p udp -m udp --dport 8472 -m comment --comment "flannelu peers" -j FLANNELU-PEERS`))
		if err := r.Update(Peers(8285, addrs("192.0.2.3", "192.0.2.4"))); err != nil {
			return err
		}
		return nil
	})
	// A rule someone slipped into the chain goes at the next check.
	ns.Exec(t, "iptables", "-I", PeerChain, "1", "-s", "203.0.113.77", "-j", "RETURN")
	inNS(t, ns, Options{}, func(r *Runner) error { return r.Update(Peers(8285, addrs("192.0.2.3", "192.0.2.4"))) })
	check("after a foreign rule in the chain", wantPeers("192.0.2.3", "192.0.2.4"))
	// The flag turned off (or the port changed): the next start purges
	// whatever an earlier one left, and only that.
	inNS(t, ns, Options{}, func(r *Runner) error { return r.Purge(Peers(9999, nil)) })
	check("after Purge", []string{"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT", foreignFwd})
	inNS(t, ns, Options{}, func(r *Runner) error { return r.Purge(Peers(8285, nil)) }) // nothing there: fine
}

// The IPv6 peer filter is the same chain in ip6tables, with /128 sources;
// it leaves iptables alone, and Purge takes it away.
func TestPeerFilter6(t *testing.T) {
	ns := newNamespace6(t)
	inNS(t, ns, Options{IPv6: true}, func(r *Runner) error {
		return r.Update(Peers6(8285, addrs("2001:db8:0:1::2", "2001:db8:0:1::3")))
	})
	want := []string{"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT", "-N FLANNELU-PEERS",
		`-A INPUT -p udp -m udp --dport 8285 -m comment --comment "flannelu peers" -j FLANNELU-PEERS`,
		foreignFwd6,
		`-A FLANNELU-PEERS -s 2001:db8:0:1::2/128 -m comment --comment "flannelu peers" -j RETURN`,
		`-A FLANNELU-PEERS -s 2001:db8:0:1::3/128 -m comment --comment "flannelu peers" -j RETURN`,
		`-A FLANNELU-PEERS -m comment --comment "flannelu peers" -j DROP`}
	if got := strings.Split(strings.TrimSpace(ns.Exec(t, "ip6tables", "-S")), "\n"); !slices.Equal(got, want) {
		t.Fatalf("ip6tables -S:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := ns.Exec(t, "iptables", "-S", "INPUT"); strings.Contains(got, PeerChain) {
		t.Errorf("the IPv6 filter touched iptables:\n%s", got)
	}
	inNS(t, ns, Options{IPv6: true}, func(r *Runner) error { return r.Purge(Peers6(0, nil)) })
	if got := ns.Exec(t, "ip6tables", "-S"); strings.Contains(got, PeerChain) {
		t.Errorf("after Purge:\n%s", got)
	}
}
