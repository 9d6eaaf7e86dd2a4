package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// iptConfig is a vxlan network with its rules in iptables (flanneld's
// default mode).
const iptConfig = `{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}`

// TestIPTablesWithFlanneldV028 walks host 1 through a migration both ways
// beside flanneld v0.28.9 on host 2, all with --ip-masq, on one etcd:
// flanneld v0.20.2, then flannelu, flanneld v0.28.9, flannelu again, and
// flanneld v0.20.2 once more. Each host has a rule of another tool in nat
// POSTROUTING and filter FORWARD (as kube-proxy's or Docker's) from before
// any daemon. Whenever flannelu or flanneld v0.28.9 runs on host 1, host
// 1's iptables-save and ip6tables-save equal host 2's once each host's
// subnet is written OWN: v0.28's set rule for rule, the jumps appended
// after the other tool's rules, nothing of v0.20.2's left. Back on v0.20.2
// the tables are as v0.20.2 first left them. After each step a pod on host
// 1 reaching host 2's address is masqueraded and one reaching host 2's pod
// is not.
func TestIPTablesWithFlanneldV028(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	v028, v020 := flanneldBinaryOf(t, flanneldV028Bin), flanneldBinaryOf(t, flanneldBin)
	c := newCluster(t, "e2e-ipt", 2, iptConfig)
	h1, h2 := c.Hosts[0], c.Hosts[1]
	for _, h := range c.Hosts {
		h.MustRun("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.0/24", "-j", "RETURN")
		h.MustRun("iptables", "-A", "FORWARD", "-s", "203.0.113.0/24", "-j", "ACCEPT")
	}
	env2 := startFlanneld(t, c, h2, v028, "--ip-masq")
	p, env1 := runFlanneld(t, c, h1, v020, "--ip-masq")
	for _, x := range []struct {
		h   *testbed.Host
		env subnet.Env
	}{{h1, env1}, {h2, env2}} {
		if err := x.h.AddPods(1, netip.PrefixFrom(x.env.Subnet.Masked().Addr().Next(), x.env.Subnet.Bits()), x.env.MTU); err != nil {
			t.Fatal(err)
		}
	}
	own1 := env1.Subnet
	want := normalSave(t, h2, env2.Subnet)
	if n := strings.Count(want, "-A FLANNEL-POSTRTG "); n != 6 || !strings.Contains(want, "-j MASQUERADE --random-fully") {
		t.Fatalf("flanneld v0.28.9 wrote %d masquerade rules, want 6 with --random-fully:\n%s", n, want)
	}
	// flanneld v0.20.2 sets its rules up beside writing subnet.env.
	var v020Tables string
	if err := testbed.Eventually(30*time.Second, func() error {
		v020Tables = normalSave(t, h1, own1)
		return hasRules(v020Tables, 5, 2)
	}); err != nil {
		t.Fatalf("flanneld v0.20.2's rules: %v", err)
	}
	if !strings.Contains(v020Tables, "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n-A POSTROUTING -s 203.0.113.0/24") {
		t.Fatalf("flanneld v0.20.2 did not insert its jump first:\n%s", v020Tables)
	}
	masqWorks(t, c, 7720)

	step := func(name, wantTables string, port int, start func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			start(t)
			if err := testbed.Eventually(30*time.Second, func() error {
				if got := normalSave(t, h1, own1); got != wantTables {
					return diffError(got, wantTables)
				}
				return nil
			}); err != nil {
				t.Fatalf("host 1's tables: %v", err)
			}
			masqWorks(t, c, port)
		})
	}
	var n1 *testbed.Node
	var logFrom int64 // where the running flannelu's log begins
	startFlannelu := func(t *testing.T) {
		p.Stop() //nolint:errcheck // flanneld v0.20.2 panics on SIGTERM; its rules stay either way
		logFrom = fileSize(filepath.Join(c.Dir, "flannelu-"+h1.Name+".log"))
		n1 = startNode(t, c, 1, "--ip-masq")
		checkReady(t, n1, "rules: in place")
		if n1.Env.Subnet != own1 {
			t.Fatalf("flannelu took subnet %v, not %v", n1.Env.Subnet, own1)
		}
	}
	startFlanneld := func(bin string) func(t *testing.T) {
		return func(t *testing.T) {
			if err := n1.Stop(); err != nil {
				t.Fatal(err)
			}
			p, _ = runFlanneld(t, c, h1, bin, "--ip-masq")
		}
	}
	step("flannelu after v0.20.2", want, 7722, startFlannelu)
	step("v0.28.9 after flannelu", want, 7724, startFlanneld(v028))
	step("flannelu after v0.28.9", want, 7726, startFlannelu)
	t.Run("flannelu's start left v0.28.9's rules as they were", func(t *testing.T) {
		b, err := os.ReadFile(n1.Proc.Log)
		if err != nil || int64(len(b)) < logFrom {
			t.Fatalf("flannelu's log: %v", err)
		}
		if log := string(b[logFrom:]); strings.Contains(log, "iptables chain differs") || strings.Contains(log, "iptables jump") {
			t.Fatalf("flannelu changed rules flanneld v0.28.9 had set up:\n%s", log)
		}
	})
	step("v0.20.2 after flannelu", v020Tables, 7728, startFlanneld(v020))
}

// fileSize is the size of the file at path, 0 when there is none.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// normalSave is h's iptables-save and ip6tables-save, every table, without
// comments and counters, its own subnet written OWN.
func normalSave(t *testing.T, h *testbed.Host, own netip.Prefix) string {
	t.Helper()
	var out strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		s, err := h.Run(tool)
		if err != nil {
			t.Fatalf("%s on %s: %v\n%s", tool, h.Name, err, s)
		}
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, "#") {
				out.WriteString(counters.ReplaceAllString(l, "[0:0]") + "\n")
			}
		}
	}
	return strings.ReplaceAll(out.String(), own.Masked().String(), "OWN")
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// hasRules checks that tables hold masq rules in FLANNEL-POSTRTG and fwd
// in FLANNEL-FWD.
func hasRules(tables string, masq, fwd int) error {
	m, f := strings.Count(tables, "-A FLANNEL-POSTRTG "), strings.Count(tables, "-A FLANNEL-FWD ")
	if m != masq || f != fwd {
		return fmt.Errorf("%d masquerade and %d forward rules, want %d and %d:\n%s", m, f, masq, fwd, tables)
	}
	return nil
}

// diffError shows two tables' states, the lines that differ marked.
func diffError(got, want string) error {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	for _, l := range g {
		if !slices.Contains(w, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	return fmt.Errorf("differ (+ only there, - only wanted):\n%sthere:\n%s", b.String(), got)
}

// masqWorks checks --ip-masq on host 1: its pod reaching host 2's address
// (outside the overlay) arrives with host 1's address, and reaching host
// 2's pod with its own. port and port+1 are fresh listening ports (a flow
// conntrack saw before keeps its NAT).
func masqWorks(t *testing.T, c *testbed.Cluster, port int) {
	t.Helper()
	h1, h2 := c.Hosts[0], c.Hosts[1]
	from, to := h1.Pods[0], h2.Pods[0]
	if src := sourceSeen(t, from, h2.NS, h2.Addr, port); src != h1.Addr {
		t.Errorf("host 2 saw the pod's datagram from %v, want host 1's %v (masqueraded)", src, h1.Addr)
	}
	waitPing(t, from, to.Addr)
	if src := sourceSeen(t, from, to.NS, to.Addr, port+1); src != from.Addr {
		t.Errorf("host 2's pod saw host 1's pod's datagram from %v, want %v (not masqueraded)", src, from.Addr)
	}
}
