package iptables

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

var (
	foreignNat6 = "-A POSTROUTING -s 2001:db8:0:9::/64 -j RETURN"
	foreignFwd6 = "-A FORWARD -s 2001:db8:0:9::/64 -j ACCEPT"
)

// newNamespace6 is newNamespace for ip6tables.
func newNamespace6(t *testing.T) testbed.NS {
	return newNamespaceOf(t, "ip6tables", "2001:db8:0:9::/64")
}

// wantTables6 is ip6tables -S of each table with flanneld's IPv6 sets for
// lease6 in place.
func wantTables6() map[string][]string {
	return map[string][]string{
		"nat": append([]string{
			"-P PREROUTING ACCEPT", "-P INPUT ACCEPT", "-P OUTPUT ACCEPT", "-P POSTROUTING ACCEPT",
			"-N FLANNEL-POSTRTG",
			foreignNat6,
		}, wantMasq6...),
		"filter": append([]string{
			"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT",
			"-N FLANNEL-FWD",
			foreignFwd6,
		}, wantForward6...),
	}
}

func TestIPv6SetUpAndResync(t *testing.T) {
	ns := newNamespace6(t)
	const resync = time.Second
	runInNS(t, ns, Options{Resync: resync, IPv6: true}, Masq(network6, lease6, true), Forward(network6))
	want := wantTables6()
	if err := testbed.Eventually(3*resync, func() error { return tablesOf(ns, "ip6tables", want) }); err != nil {
		t.Fatalf("first set-up: %v", err)
	}
	// iptables (IPv4) is left alone.
	v4 := map[string][]string{
		"nat":    {"-P PREROUTING ACCEPT", "-P INPUT ACCEPT", "-P OUTPUT ACCEPT", "-P POSTROUTING ACCEPT"},
		"filter": {"-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"},
	}
	if err := tablesOf(ns, "iptables", v4); err != nil {
		t.Errorf("an IPv6 runner touched iptables: %v", err)
	}
	ns.Exec(t, "ip6tables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "-s", "2001:db8:100::/48", "!", "-d", "ff00::/8",
		"-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE", "--random-fully")
	ns.Exec(t, "ip6tables", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD")
	if err := tablesOf(ns, "ip6tables", want); err == nil {
		t.Fatal("the rules deleted by hand are still listed")
	}
	if err := testbed.Eventually(3*resync, func() error { return tablesOf(ns, "ip6tables", want) }); err != nil {
		t.Fatalf("within %v of deleting two rules: %v", 3*resync, err)
	}
}

func TestSetOfTheOtherFamilyRefused(t *testing.T) {
	ns := newNamespace6(t)
	inNS(t, ns, Options{IPv6: true}, func(r *Runner) error {
		for _, s := range []Set{Masq(network, lease, true), Forward(network)} {
			if err := r.Update(s); err == nil || !strings.Contains(err.Error(), s.Name) {
				return fmt.Errorf("an ip6tables runner set up the IPv4 set %q: %v", s.Name, err)
			}
		}
		return nil
	})
	inNS(t, ns, Options{}, func(r *Runner) error {
		r.Keep(Forward(network6))
		if err := r.Sync(); err == nil {
			return fmt.Errorf("an iptables runner set up the IPv6 forward set")
		}
		return nil
	})
}
