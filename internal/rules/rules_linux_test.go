package rules

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

func options(nft bool) Options {
	return Options{
		NFTables: nft, Masq: true, Forward: true, RandomFully: true, Resync: time.Hour,
		IPv4:   Family{Network: netip.MustParsePrefix("198.18.0.0/16"), Subnet: netip.MustParsePrefix("198.18.40.0/24")},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// setUp makes the manager of o in ns and sets it up.
func setUp(t *testing.T, ns testbed.NS, o Options) Manager {
	t.Helper()
	var m Manager
	if err := ns.Do(func() (err error) {
		if m, err = New(o); err == nil {
			err = m.Setup(context.Background())
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.InPlace(); err != nil {
		t.Fatalf("after Setup: InPlace %v", err)
	}
	return m
}

// flannelState is what each tool holds of flannel's: iptables' chains,
// jumps and rules (nat and filter), nft's flannel tables.
func flannelState(t *testing.T, ns testbed.NS) (ipt, nft string) {
	t.Helper()
	var lines []string
	for _, table := range []string{"nat", "filter"} {
		for _, l := range strings.Split(ns.MustRun("iptables-save", "-t", table), "\n") {
			if strings.Contains(l, "FLANNEL") {
				lines = append(lines, l)
			}
		}
	}
	var tables []string
	for _, l := range strings.Split(ns.MustRun("nft", "list", "tables"), "\n") {
		if strings.Contains(l, "flannel") { // iptables-nft's own tables are listed too
			tables = append(tables, l)
		}
	}
	return strings.Join(lines, "\n"), strings.Join(tables, "\n")
}

// TestSwitchingModesCleansTheOther: a start in nftables mode removes what
// an iptables-mode start left (the jumps too, which flanneld v0.28 leaves),
// and a start in iptables mode removes flannel's nftables tables.
func TestSwitchingModesCleansTheOther(t *testing.T) {
	ns := testbed.Namespace(t, "rules")
	var m Manager
	if err := ns.Do(func() (err error) { m, err = New(options(false)); return err }); err != nil {
		t.Fatal(err)
	}
	if err := m.InPlace(); err == nil || !strings.Contains(err.Error(), "not set up yet") {
		t.Fatalf("before Setup: InPlace %v", err)
	}
	if err := ns.Do(func() error { return m.Setup(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	ipt, nft := flannelState(t, ns)
	if strings.Count(ipt, "\n")+1 != 12 || nft != "" {
		t.Fatalf("iptables mode: iptables has\n%s\n(want the 2 chains, 2 jumps, 6+2 rules), nft has %q", ipt, nft)
	}

	setUp(t, ns, options(true))
	ipt, nft = flannelState(t, ns)
	if ipt != "" || nft != "table ip flannel-ipv4\ntable ip6 flannel-ipv6" {
		t.Fatalf("nftables mode after iptables mode: iptables still has\n%s\nnft has %q", ipt, nft)
	}

	setUp(t, ns, options(false))
	ipt, nft = flannelState(t, ns)
	if strings.Count(ipt, "\n")+1 != 12 || nft != "" {
		t.Fatalf("iptables mode after nftables mode: iptables has\n%s\nnft still has %q", ipt, nft)
	}
}

// TestNFTablesModeWithoutNFT: flanneld stops when nftables mode cannot
// run nft; so does flannelu, with an error naming the mode.
func TestNFTablesModeWithoutNFT(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := New(options(true)); err == nil || !strings.Contains(err.Error(), "EnableNFTables") || !strings.Contains(err.Error(), "nft") {
		t.Fatalf("New without nft: %v", err)
	}
}
