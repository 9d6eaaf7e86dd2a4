package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// nftConfig is a vxlan network in flanneld v0.28's nftables mode.
const nftConfig = `{"Network":"198.18.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`

// TestNFTablesWithFlanneldV028 runs flannelu on host 1 and flanneld v0.28.9
// on host 2, both with --ip-masq, on one etcd, in nftables mode: the two
// hosts' `nft list ruleset` are equal once each host's subnet is written
// OWN, neither holds an iptables rule of flannel's, and the pods reach each
// other. Then flannelu restarts in iptables mode (its nftables tables go)
// and in nftables mode again (its iptables chains and jumps go).
func TestNFTablesWithFlanneldV028(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	flanneld := flanneldBinaryOf(t, flanneldV028Bin)
	c := newCluster(t, "e2e-nft", 2, nftConfig)
	n1 := startNode(t, c, 1, "--ip-masq", "--iptables-resync", "1")
	h1, h2 := c.Hosts[0], c.Hosts[1]
	env2 := startFlanneld(t, c, h2, flanneld, "--ip-masq")
	if err := n1.AddPods(1); err != nil {
		t.Fatal(err)
	}
	if err := h2.AddPods(1, netip.PrefixFrom(env2.Subnet.Masked().Addr().Next(), env2.Subnet.Bits()), env2.MTU); err != nil {
		t.Fatal(err)
	}
	want := normalRuleset(t, h2, env2.Subnet)
	if !strings.Contains(want, "table ip flannel-ipv4") || !strings.Contains(want, "masquerade fully-random") {
		t.Fatalf("flanneld v0.28.9 wrote no flannel-ipv4 table with masquerade fully-random:\n%s", want)
	}
	t.Run("rulesets equal", func(t *testing.T) {
		if got := normalRuleset(t, h1, n1.Env.Subnet); got != want {
			t.Fatalf("flannelu's nft list ruleset:\n%s\nflanneld v0.28.9's:\n%s", got, want)
		}
	})
	t.Run("no iptables rules of flannel's", func(t *testing.T) {
		for _, h := range []*testbed.Host{h1, h2} {
			if got := flannelIPTables(t, h); got != "" {
				t.Errorf("%s holds iptables rules of flannel's in nftables mode:\n%s", h.Name, got)
			}
		}
	})
	t.Run("ready", func(t *testing.T) { checkReady(t, n1, "rules: in place") })
	t.Run("metrics", func(t *testing.T) {
		checkMetrics(t, n1, "flannelu_malformed_leases_total", "flannelu_nftables_resync_failures_total")
		if v, err := n1.Metric("flannelu_nftables_resync_failures_total"); err != nil || v != 0 {
			t.Errorf("flannelu_nftables_resync_failures_total %v (%v), want 0", v, err)
		}
	})
	t.Run("pods reach each other", func(t *testing.T) { fullMesh(t, allPods(c, 1, 2)) })
	t.Run("a pod reaching outside the overlay is masqueraded", func(t *testing.T) {
		if src := sourceSeen(t, h1.Pods[0], h2.NS, h2.Addr, 7711); src != h1.Addr {
			t.Fatalf("host 2 saw source %v, want host 1's %v", src, h1.Addr)
		}
	})

	setNFTables := func(on bool) {
		t.Helper()
		cfg := strings.Replace(nftConfig, `"EnableNFTables":true`, fmt.Sprintf(`"EnableNFTables":%t`, on), 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Client.Put(ctx, testbed.EtcdPrefix+"/config", cfg); err != nil {
			t.Fatal(err)
		}
	}
	restart := func(t *testing.T) *testbed.Node {
		t.Helper()
		if err := n1.Stop(); err != nil {
			t.Fatal(err)
		}
		n := startNode(t, c, 1, "--ip-masq", "--iptables-resync", "1")
		checkReady(t, n, "rules: in place")
		return n
	}
	t.Run("restart in iptables mode removes the nftables tables", func(t *testing.T) {
		setNFTables(false)
		n1 = restart(t)
		if got := normalRuleset(t, h1, n1.Env.Subnet); strings.Contains(got, "flannel-ipv") {
			t.Fatalf("flannel's nftables tables are still there:\n%s", got)
		}
		if got := flannelIPTables(t, h1); strings.Count(got, "\n")+1 != 12 {
			t.Fatalf("iptables mode: flannel's iptables rules are\n%s\nwant 2 chains, 2 jumps, 8 rules", got)
		}
		waitPing(t, h1.Pods[0], h2.Pods[0].Addr)
	})
	t.Run("restart in nftables mode removes the iptables rules", func(t *testing.T) {
		setNFTables(true)
		n1 = restart(t)
		if got := flannelIPTables(t, h1); got != "" {
			t.Fatalf("flannel's iptables rules are still there:\n%s", got)
		}
		// iptables (nf_tables) keeps its emptied base chains (nat
		// POSTROUTING, filter FORWARD): iptables', not flannel's.
		if got, want := flannelTables(t, h1, n1.Env.Subnet), flannelTables(t, h2, env2.Subnet); got != want {
			t.Fatalf("flannelu's tables:\n%s\nflanneld v0.28.9's:\n%s", got, want)
		}
		waitPing(t, h1.Pods[0], h2.Pods[0].Addr)
	})
}

// startFlanneld runs flanneld (with the cluster's etcd) on h and waits
// for its subnet.env.
func startFlanneld(t *testing.T, c *testbed.Cluster, h *testbed.Host, bin string, args ...string) subnet.Env {
	t.Helper()
	_, env := runFlanneld(t, c, h, bin, args...)
	return env
}

// runFlanneld is startFlanneld that also gives the process. Where another
// daemon ran before and left subnet.env, it waits for flanneld's own
// (flanneld writes the file through a rename: a new inode).
func runFlanneld(t *testing.T, c *testbed.Cluster, h *testbed.Host, bin string, args ...string) (*testbed.Proc, subnet.Env) {
	t.Helper()
	file := filepath.Join(c.Dir, h.Name, "subnet.env")
	var before uint64
	if st, err := os.Stat(file); err == nil {
		before = st.Sys().(*syscall.Stat_t).Ino
	}
	argv := append([]string{bin, "--etcd-endpoints", c.EtcdEndpoints(), "--iface", h.Iface, "--subnet-file", file}, args...)
	p, err := c.Start(h.NS, "flanneld-"+h.Name, argv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("flanneld on %s:%s", h.Name, testbed.Tail(p.Log, 30))
		}
	})
	var env subnet.Env
	if err := testbed.Eventually(60*time.Second, func() error {
		if p.Exited() {
			return nil
		}
		if st, err := os.Stat(file); err != nil || st.Sys().(*syscall.Stat_t).Ino == before {
			return fmt.Errorf("no subnet.env of flanneld's yet (%v)", err)
		}
		env, err = subnet.ReadEnv(file)
		return err
	}); err != nil || p.Exited() {
		t.Fatalf("flanneld wrote no subnet.env (%v):%s", err, testbed.Tail(p.Log, 20))
	}
	return p, env
}

// normalRuleset is h's `nft list ruleset` with its own subnet written OWN.
func normalRuleset(t *testing.T, h *testbed.Host, own netip.Prefix) string {
	t.Helper()
	out, err := h.Run("nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset on %s: %v\n%s", h.Name, err, out)
	}
	return strings.ReplaceAll(out, own.Masked().String(), "OWN")
}

// flannelTables is h's two flannel tables as nft lists them, its own
// subnet written OWN.
func flannelTables(t *testing.T, h *testbed.Host, own netip.Prefix) string {
	t.Helper()
	var out string
	for _, tb := range [][]string{{"ip", "flannel-ipv4"}, {"ip6", "flannel-ipv6"}} {
		o, err := h.Run("nft", "list", "table", tb[0], tb[1])
		if err != nil {
			t.Fatalf("nft list table %s %s on %s: %v\n%s", tb[0], tb[1], h.Name, err, o)
		}
		out += o
	}
	return strings.ReplaceAll(out, own.Masked().String(), "OWN")
}

// flannelIPTables lists the iptables and ip6tables lines of h that name a
// chain of flannel's.
func flannelIPTables(t *testing.T, h *testbed.Host) string {
	t.Helper()
	var lines []string
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := h.Run(tool)
		if err != nil {
			t.Fatalf("%s on %s: %v\n%s", tool, h.Name, err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "FLANNEL") {
				lines = append(lines, l)
			}
		}
	}
	return strings.Join(lines, "\n")
}

// checkReady waits until n's /readyz answers 200 with the given line.
func checkReady(t *testing.T, n *testbed.Node, line string) {
	t.Helper()
	if err := testbed.Eventually(30*time.Second, func() error {
		code, body, err := n.Get("/readyz")
		if err == nil && (code != 200 || !strings.Contains(body, line+"\n")) {
			err = fmt.Errorf("/readyz %d:\n%s", code, body)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
