package nftables

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// wantRuleset is `nft list ruleset` on a flanneld v0.28.9 host with
// --ip-masq, network 198.18.0.0/16, lease 198.18.40.0/24, IPv4 only
// (read from a running flanneld; handles removed).
const wantRuleset = `table ip flannel-ipv4 {
	comment "rules for flannel-ipv4"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip saddr 198.18.40.0/24 ip daddr 198.18.0.0/16 return
		ip saddr 198.18.0.0/16 ip daddr 198.18.40.0/24 return
		ip saddr != 198.18.40.0/24 ip daddr 198.18.0.0/16 return
		ip saddr 198.18.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != 198.18.0.0/16 ip daddr 198.18.0.0/16 masquerade fully-random
	}

	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip saddr 198.18.0.0/16 accept
		ip daddr 198.18.0.0/16 accept
	}
}
table ip6 flannel-ipv6 {
	comment "rules for flannel-ipv6"
}
`

var (
	network = netip.MustParsePrefix("198.18.0.0/16")
	lease   = netip.MustParsePrefix("198.18.40.0/24")
	quiet   = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func ruleset(t *testing.T, ns testbed.NS) string {
	t.Helper()
	out, err := ns.Run("nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return out
}

// setUp opens the tables in ns and sets them up.
func setUp(t *testing.T, ns testbed.NS, o Options) *Tables {
	t.Helper()
	o.Logger = quiet
	var tables *Tables
	if err := ns.Do(func() (err error) {
		if tables, err = New(o); err == nil {
			err = tables.Setup(context.Background())
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return tables
}

func TestRulesetIsFlanneldV028s(t *testing.T) {
	ns := testbed.Namespace(t, "nft")
	o := Options{IPv4: Family{network, lease}, Masq: true, Forward: true, RandomFully: true}
	tables := setUp(t, ns, o)
	if got := ruleset(t, ns); got != wantRuleset {
		t.Fatalf("nft list ruleset:\n%s\nwant flanneld v0.28.9's:\n%s", got, wantRuleset)
	}
	t.Run("a rule deleted is restored by Check", func(t *testing.T) {
		out := ns.MustRun("nft", "-a", "list", "chain", "ip", TableIPv4, PostrtgChain)
		m := regexp.MustCompile(`meta mark .* # handle (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no handle in\n%s", out)
		}
		ns.MustRun("nft", "delete", "rule", "ip", TableIPv4, PostrtgChain, "handle", m[1])
		if err := ns.Do(func() error { return tables.Check(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		if got := ruleset(t, ns); got != wantRuleset {
			t.Fatalf("after Check:\n%s", got)
		}
	})
	t.Run("a rule added is removed by Check", func(t *testing.T) {
		ns.MustRun("nft", "add", "rule", "ip", TableIPv4, ForwardChain, "ip", "saddr", "203.0.113.0/24", "accept")
		if err := ns.Do(func() error { return tables.Check(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		if got := ruleset(t, ns); got != wantRuleset {
			t.Fatalf("after Check:\n%s", got)
		}
	})
	t.Run("the table deleted is restored by Check", func(t *testing.T) {
		ns.MustRun("nft", "delete", "table", "ip", TableIPv4)
		if err := ns.Do(func() error { return tables.Check(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		// The table comes back after flannel-ipv6 in the listing.
		want := wantRuleset[:strings.Index(wantRuleset, "table ip6")]
		if got := ns.MustRun("nft", "list", "table", "ip", TableIPv4); got != want {
			t.Fatalf("after Check:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("intact rules are left alone", func(t *testing.T) {
		before := ns.MustRun("nft", "-a", "list", "ruleset")
		if err := ns.Do(func() error { return tables.Check(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		if after := ns.MustRun("nft", "-a", "list", "ruleset"); after != before {
			t.Fatalf("Check rewrote intact rules:\n%s\nwas\n%s", after, before)
		}
	})
}

// A restart with other options: --ip-masq-fully-random-disable, another
// lease, no --ip-masq, dual stack; then Delete (a start in iptables mode).
func TestRulesetFollowsTheOptions(t *testing.T) {
	ns := testbed.Namespace(t, "nft")
	setUp(t, ns, Options{IPv4: Family{network, lease}, Masq: true, Forward: true, RandomFully: true})

	other := netip.MustParsePrefix("198.18.41.0/24")
	setUp(t, ns, Options{IPv4: Family{network, other}, Masq: true, Forward: true, RandomFully: false})
	want := strings.ReplaceAll(strings.ReplaceAll(wantRuleset, " fully-random", ""), "198.18.40.0/24", "198.18.41.0/24")
	if got := ruleset(t, ns); got != want {
		t.Fatalf("with --ip-masq-fully-random-disable and lease %v:\n%s\nwant\n%s", other, got, want)
	}

	v6net, v6lease := netip.MustParsePrefix("2001:db8:100::/48"), netip.MustParsePrefix("2001:db8:100:5::/64")
	setUp(t, ns, Options{IPv4: Family{network, other}, IPv6: Family{v6net, v6lease}, Forward: true, RandomFully: true})
	got := ruleset(t, ns)
	if strings.Contains(got, "postrtg") || !strings.Contains(got, "ip6 saddr 2001:db8:100::/48 accept") || !strings.Contains(got, "ip daddr 198.18.0.0/16 accept") {
		t.Fatalf("without --ip-masq, dual stack: want no postrtg chain and both forward chains:\n%s", got)
	}

	if err := ns.Do(func() error { return Delete(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	if got := ruleset(t, ns); got != "" {
		t.Fatalf("after Delete:\n%s", got)
	}
	if err := ns.Do(func() error { return Delete(context.Background()) }); err != nil {
		t.Fatalf("Delete with nothing to delete: %v", err)
	}
}

// The IPv6 masquerade chain is the IPv4 one with ip6 and ff00::/8.
func TestIPv6Masquerade(t *testing.T) {
	ns := testbed.Namespace(t, "nft")
	v6net, v6lease := netip.MustParsePrefix("2001:db8:100::/48"), netip.MustParsePrefix("2001:db8:100:5::/64")
	setUp(t, ns, Options{IPv6: Family{v6net, v6lease}, Masq: true, RandomFully: true})
	got := ns.MustRun("nft", "list", "chain", "ip6", TableIPv6, PostrtgChain)
	for _, want := range []string{
		"ip6 saddr 2001:db8:100:5::/64 ip6 daddr 2001:db8:100::/48 return",
		"ip6 saddr 2001:db8:100::/48 ip6 daddr != ff00::/8 masquerade fully-random",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("postrtg has no %q:\n%s", want, got)
		}
	}
}
