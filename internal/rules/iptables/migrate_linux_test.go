package iptables

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// recorder is a stand-in for iptables (or ip6tables) that runs the real
// tool and, after each command that changes a table, appends both tables
// as -S lists them to a log: every state the kernel went through.
func recorder(t *testing.T, tool string) (path, log string) {
	t.Helper()
	real, err := exec.LookPath(tool)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, log = filepath.Join(dir, tool), filepath.Join(dir, "states")
	script := fmt.Sprintf(`#!/bin/sh
%[1]s "$@"; rc=$?
case " $* " in *" -A "*|*" -I "*|*" -D "*|*" -N "*|*" -F "*|*" -X "*|*" -R "*)
	{ echo "### $*"; echo "*nat"; %[1]s -t nat -S; echo "*filter"; %[1]s -t filter -S; } >>%[2]s;;
esac
exit $rc
`, real, log)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

// snapshot is one state of the nat and filter tables: each table's chains'
// rules (as fields) and the built-in chains' policies.
type snapshot struct {
	cmd    string // the command that led to it
	rules  map[string][][]string
	policy map[string]string
}

func newSnapshot(cmd string) *snapshot {
	return &snapshot{cmd: cmd, rules: map[string][][]string{}, policy: map[string]string{}}
}

// add takes one line of -S output of table.
func (s *snapshot) add(table, line string) {
	f := fields(line)
	switch {
	case len(f) == 3 && f[0] == "-P":
		s.policy[table+" "+f[1]] = f[2]
	case len(f) > 2 && f[0] == "-A":
		s.rules[table+" "+f[1]] = append(s.rules[table+" "+f[1]], f[2:])
	}
}

// readStates parses a recorder's log.
func readStates(t *testing.T, log string) []*snapshot {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []*snapshot
	table := ""
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "### "):
			out = append(out, newSnapshot(strings.TrimPrefix(line, "### ")))
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case line != "":
			out[len(out)-1].add(table, line)
		}
	}
	return out
}

// currentState reads the tables of ns now.
func currentState(ns testbed.NS, tool string) *snapshot {
	s := newSnapshot("(now)")
	for _, table := range []string{"nat", "filter"} {
		for _, line := range strings.Split(ns.MustRun(tool, "-t", table, "-S"), "\n") {
			s.add(table, line)
		}
	}
	return s
}

// packet is what the verdicts depend on.
type packet struct {
	src, dst netip.Addr
	marked   bool // kube-proxy's 0x4000
}

func (p packet) String() string { return fmt.Sprintf("%v->%v marked=%t", p.src, p.dst, p.marked) }

// verdict follows p through table's built-in chain as the kernel would
// and names the target that decides it: MASQUERADE, ACCEPT or DROP, or
// the chain's policy.
func (s *snapshot) verdict(t *testing.T, table, builtin string, p packet) string {
	if v, ok := s.walk(t, table, builtin, p); ok {
		return v
	}
	return s.policy[table+" "+builtin]
}

func (s *snapshot) walk(t *testing.T, table, chain string, p packet) (string, bool) {
	for _, rule := range s.rules[table+" "+chain] {
		target, ok := matches(t, rule, p)
		if !ok {
			continue
		}
		switch target {
		case "RETURN":
			return "", false
		case "ACCEPT", "DROP", "MASQUERADE":
			return target, true
		}
		if v, ok := s.walk(t, table, target, p); ok {
			return v, true
		}
	}
	return "", false
}

// matches reports whether rule (the fields after -A <chain>) matches p,
// and its target. It knows the matches flannel's rules and the tests'
// foreign rules use, and fails the test on any other.
func matches(t *testing.T, rule []string, p packet) (target string, ok bool) {
	ok = true
	neg := false
	for i := 0; i < len(rule); i++ {
		hit := true
		switch rule[i] {
		case "!":
			neg = true
			continue
		case "-s", "-d":
			a := p.src
			if rule[i] == "-d" {
				a = p.dst
			}
			i++
			hit = netip.MustParsePrefix(rule[i]).Contains(a)
		case "-m":
			switch rule[i+1] {
			case "comment":
				i += 3
				continue
			case "mark":
				if rule[i+3] != kubeProxyMark {
					t.Fatalf("mark %s in %q", rule[i+3], rule)
				}
				hit, i = p.marked, i+3
			default:
				t.Fatalf("match %s in %q", rule[i+1], rule)
			}
		case "-j":
			target = rule[i+1]
			i = len(rule)
			continue
		default:
			t.Fatalf("argument %s in %q", rule[i], rule)
		}
		ok = ok && hit != neg
		neg = false
	}
	return target, ok
}

// TestMigrationFromV020 installs flanneld v0.20.2's sets as a v0.20.2 node
// leaves them (jumps inserted first, before a foreign rule such as
// kube-proxy's), then starts a runner with v0.28's, recording every state
// the tables pass through: it ends with exactly v0.28's sets (jumps after
// the foreign rule), and in every state between, each probe packet gets
// the verdict it had before or the one it has after, never a third (no
// moment without masquerade for a pod reaching outside, none with it for
// pod to pod). A second start changes nothing. Both families.
func TestMigrationFromV020(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name, tool, net, ls := "ipv4", "iptables", network, lease
		srcs := []string{"198.18.40.5", "198.18.41.5", "192.0.2.1", "203.0.113.9"}
		dsts := []string{"198.18.40.6", "198.18.41.6", "198.18.42.6", "192.0.2.2", "224.0.0.251"}
		newNS, want := newNamespace, func() map[string][]string { return wantTables(lease.String()) }
		if v6 {
			name, tool, net, ls = "ipv6", "ip6tables", network6, lease6
			srcs = []string{"2001:db8:100:28::5", "2001:db8:100:29::5", "2001:db8:0:1::1", "2001:db8:0:9::9"}
			dsts = []string{"2001:db8:100:28::6", "2001:db8:100:29::6", "2001:db8:100:2a::6", "2001:db8:0:1::2", "ff02::fb"}
			newNS, want = newNamespace6, wantTables6
		}
		t.Run(name, func(t *testing.T) {
			ns := newNS(t)
			o := Options{IPv6: v6}
			sets := []Set{Masq(net, ls, true), Forward(net)}
			inNS(t, ns, o, func(r *Runner) error {
				for i, old := range []Set{v020Set(sets[0], v020Masq, net, ls), v020Set(sets[1], v020Forward, net, ls)} {
					if err := r.ipt.NewChain(old.Table, old.Chain); err != nil {
						return err
					}
					for _, rule := range old.Rules {
						if err := r.add(old.Table, rule); err != nil {
							return fmt.Errorf("v0.20.2 set %d: %w", i, err)
						}
					}
				}
				return nil
			})
			before := currentState(ns, tool)
			path, log := recorder(t, tool)
			o.Path = path
			start := func(r *Runner) error {
				for _, s := range sets {
					r.Keep(s)
				}
				return r.Sync()
			}
			inNS(t, ns, o, start)
			if err := tablesOf(ns, tool, want()); err != nil {
				t.Fatalf("after the start: %v", err)
			}
			states := readStates(t, log)
			after := currentState(ns, tool)
			var probes []packet
			for _, s := range srcs {
				for _, d := range dsts {
					for _, m := range []bool{false, true} {
						probes = append(probes, packet{netip.MustParseAddr(s), netip.MustParseAddr(d), m})
					}
				}
			}
			changed := 0
			for _, chain := range [][2]string{{"nat", "POSTROUTING"}, {"filter", "FORWARD"}} {
				for _, p := range probes {
					was, is := before.verdict(t, chain[0], chain[1], p), after.verdict(t, chain[0], chain[1], p)
					if was != is {
						changed++
					}
					for _, st := range states {
						if v := st.verdict(t, chain[0], chain[1], p); v != was && v != is {
							t.Errorf("%s %s: %v got %s after %q: neither v0.20.2's %s nor v0.28's %s", chain[0], chain[1], p, v, st.cmd, was, is)
						}
					}
				}
			}
			// flanneld's own way, the chain emptied and filled again,
			// passes through a state this check rejects.
			emptied := newSnapshot("flush")
			emptied.rules, emptied.policy = maps.Clone(before.rules), before.policy
			delete(emptied.rules, "nat "+MasqChain)
			out := packet{netip.MustParseAddr(srcs[0]), netip.MustParseAddr(dsts[3]), false}
			if v := emptied.verdict(t, "nat", "POSTROUTING", out); v == before.verdict(t, "nat", "POSTROUTING", out) {
				t.Fatalf("a pod reaching outside gets %s with the chain emptied too: the check cannot tell", v)
			}
			// The probes see the difference between the two sets
			// (pods to another host's pods, a foreign rule now
			// first), else the check above proves nothing.
			if changed == 0 {
				t.Fatal("no probe's verdict differs between v0.20.2's and v0.28's sets")
			}
			t.Logf("%d states between v0.20.2's and v0.28's sets, %d probes, %d verdicts changed, none a third", len(states), 2*len(probes), changed)
			if err := os.Remove(log); err != nil {
				t.Fatal(err)
			}
			inNS(t, ns, o, start)
			if again := readStates(t, log); len(again) != 0 {
				t.Errorf("a second start changed the tables %d times, first: %s", len(again), again[0].cmd)
			}
		})
	}
}
