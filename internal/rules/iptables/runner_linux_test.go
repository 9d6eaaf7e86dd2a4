package iptables

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// A foreign rule in each built-in chain, added before flannelu starts (as
// kube-proxy's or Docker's): the jumps go after it, as flanneld v0.28
// appends them, and it survives every set-up.
var (
	foreignNat = "-A POSTROUTING -s 203.0.113.0/24 -j RETURN"
	foreignFwd = "-A FORWARD -s 203.0.113.0/24 -j ACCEPT"
)

// newNamespace is a fresh namespace with the foreign rules and Docker's
// FORWARD policy of DROP.
func newNamespace(t *testing.T) testbed.NS { return newNamespaceOf(t, "iptables", "203.0.113.0/24") }

// newNamespaceOf is a namespace whose tool (iptables or ip6tables) has a
// foreign rule for src in each built-in chain and Docker's FORWARD policy
// of DROP.
func newNamespaceOf(t *testing.T, tool, src string) testbed.NS {
	ns := testbed.Namespace(t, "ipt")
	for _, args := range [][]string{
		{tool, "-t", "nat", "-A", "POSTROUTING", "-s", src, "-j", "RETURN"},
		{tool, "-A", "FORWARD", "-s", src, "-j", "ACCEPT"},
		{tool, "-P", "FORWARD", "DROP"},
	} {
		ns.Exec(t, args...)
	}
	return ns
}

// wantTables is iptables -S of each table once the sets for lease are in
// place: policies, flannel's chain, the jump appended after the foreign
// rule in the built-in chain, then flannel's rules in flanneld v0.28's
// order.
func wantTables(lease string) map[string][]string {
	masq := strings.Split(strings.ReplaceAll(strings.Join(wantMasq, "\n"), "198.18.40.0/24", lease), "\n")
	return map[string][]string{
		"nat": append([]string{
			"-P PREROUTING ACCEPT", "-P INPUT ACCEPT", "-P OUTPUT ACCEPT", "-P POSTROUTING ACCEPT",
			"-N FLANNEL-POSTRTG",
			foreignNat,
		}, masq...),
		"filter": append([]string{
			"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT",
			"-N FLANNEL-FWD",
			foreignFwd,
		}, wantForward...),
	}
}

// tables reads iptables -S of both tables inside ns (through ip netns
// exec, independently of the runner under test) and compares them with
// want, exactly and in order.
func tables(ns testbed.NS, want map[string][]string) error { return tablesOf(ns, "iptables", want) }

// tablesOf is tables for iptables or ip6tables.
func tablesOf(ns testbed.NS, tool string, want map[string][]string) error {
	for _, table := range []string{"nat", "filter"} {
		out, err := ns.Run(tool, "-t", table, "-S")
		if err != nil {
			return err
		}
		got := strings.Split(strings.TrimSpace(out), "\n")
		if !slices.Equal(got, want[table]) {
			return fmt.Errorf("%s -t %s -S:\n%s\nwant:\n%s", tool, table, strings.Join(got, "\n"), strings.Join(want[table], "\n"))
		}
	}
	return nil
}

// inNS runs fn with a Runner on a thread inside ns: go-iptables execs
// iptables from the calling thread, and a child process starts in its
// parent thread's network namespace.
func inNS(t *testing.T, ns testbed.NS, o Options, fn func(r *Runner) error) {
	t.Helper()
	err := ns.Do(func() error {
		r, err := New(o)
		if err != nil {
			return err
		}
		return fn(r)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ensureAll sets the masquerade set for leaseStr and the forward set up,
// as a start does.
func ensureAll(leaseStr string) func(r *Runner) error {
	return func(r *Runner) error {
		if !r.RandomFully() {
			return fmt.Errorf("iptables here lacks --random-fully; the expected rules assume it")
		}
		r.Keep(Masq(network, netip.MustParsePrefix(leaseStr), true))
		r.Keep(Forward(network))
		return r.Sync()
	}
}

func TestSetUp(t *testing.T) {
	ns := newNamespace(t)
	inNS(t, ns, Options{}, ensureAll("198.18.40.0/24"))
	want := wantTables("198.18.40.0/24")
	if err := tables(ns, want); err != nil {
		t.Fatal(err)
	}
	// A restart: a new runner finds every rule in place and adds nothing.
	inNS(t, ns, Options{}, ensureAll("198.18.40.0/24"))
	if err := tables(ns, want); err != nil {
		t.Fatalf("after setting up again: %v", err)
	}
}

// TestResyncRestores deletes rules behind the running loop's back, one from
// the middle of each flannel chain and the forward jump, and waits for the
// loop to put both sets back whole and in order.
func TestResyncRestores(t *testing.T) {
	ns := newNamespace(t)
	const resync = time.Second
	runInNS(t, ns, Options{Resync: resync}, Masq(network, lease, true), Forward(network))
	want := wantTables(lease.String())
	if err := testbed.Eventually(3*resync, func() error { return tables(ns, want) }); err != nil {
		t.Fatalf("first set-up: %v", err)
	}
	ns.Exec(t, "iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "-s", "198.18.40.0/24", "-d", "198.18.0.0/16",
		"-m", "comment", "--comment", "flanneld masq", "-j", "RETURN")
	ns.Exec(t, "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD")
	if err := tables(ns, want); err == nil {
		t.Fatal("the rules deleted by hand are still listed")
	}
	if err := testbed.Eventually(3*resync, func() error { return tables(ns, want) }); err != nil {
		t.Fatalf("within %v of deleting two rules: %v", 3*resync, err)
	}
}

// runInNS runs a Runner keeping sets on a thread inside ns until the test
// ends; then Run must return.
func runInNS(t *testing.T, ns testbed.NS, o Options, sets ...Set) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error {
			r, err := New(o)
			if err != nil {
				return err
			}
			if !r.RandomFully() {
				return fmt.Errorf("%s here lacks --random-fully; the expected rules assume it", map[bool]string{false: "iptables", true: "ip6tables"}[o.IPv6])
			}
			for _, s := range sets {
				r.Keep(s)
			}
			r.Run(ctx)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

// TestSubnetChanged: the host got a new subnet (flanneld's recycle), and a
// start puts the new subnet's masquerade rules in place of the old ones.
func TestSubnetChanged(t *testing.T) {
	ns := newNamespace(t)
	inNS(t, ns, Options{}, ensureAll("198.18.40.0/24"))
	cur := "198.18.41.0/24"
	inNS(t, ns, Options{}, ensureAll(cur))
	if err := tables(ns, wantTables(cur)); err != nil {
		t.Fatal(err)
	}
}

// TestFailuresCounted runs the loop against an iptables that fails every
// command: each check is logged as an error and counted, and the loop
// keeps going until its context ends. No root needed.
func TestFailuresCounted(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "iptables")
	script := "#!/bin/sh\ncase \"$1\" in --version) echo 'iptables v1.8.9 (legacy)';; *) echo 'iptables: broken' >&2; exit 4;; esac\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r, err := New(Options{Path: fake, Resync: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r.Keep(Forward(network))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	// Three failed checks counted, with the loop still going after each.
	err = testbed.Eventually(30*time.Second, func() error {
		if n := r.Failures(); n < 3 {
			return fmt.Errorf("%d failures counted at 10ms resyncs, want at least 3", n)
		}
		return nil
	})
	cancel()
	<-done
	if err != nil {
		t.Error(err)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "error=") ||
		!strings.Contains(logs.String(), "iptables: broken") {
		t.Errorf("log has no error with the cause:\n%s", logs.String())
	}
	if _, err := New(Options{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("New with no iptables binary succeeded")
	}
}
