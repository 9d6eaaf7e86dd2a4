package e2e

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// TestReleaseBinary: make release gives a static (no interpreter, no
// dynamic section), stripped (no symbol table, no DWARF) binary without
// the build's paths, whose --version prints the version as flanneld
// v0.28.9 prints its own: the version alone on stderr, nothing on stdout,
// exit status 0.
func TestReleaseBinary(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "flannelu")
	build := exec.Command("make", "release", "VERSION=v9.8.7-test", "RELEASE_BIN="+bin)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %v: the binary is not static", p.Type)
		}
	}
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("section %s: the binary is not stripped", s.Name)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(root)) {
		t.Errorf("the binary holds the build directory %s (no -trimpath)", root)
	}
	stdout, stderr, err := runVersion(bin)
	if err != nil || stdout != "" || stderr != "v9.8.7-test\n" {
		t.Errorf("flannelu --version: stdout %q, stderr %q, %v; want the version alone on stderr", stdout, stderr, err)
	}
	flanneldBinary(t) // builds both flanneld versions when missing
	stdout, stderr, err = runVersion(filepath.Join(root, "bin", "flanneld-v0.28.9"))
	if err != nil || stdout != "" || stderr != "v0.28.9\n" {
		t.Errorf("flanneld v0.28.9 --version: stdout %q, stderr %q, %v; flannelu's format copies v9.8.7-test\\n on stderr", stdout, stderr, err)
	}
}

func runVersion(bin string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := exec.Command(bin, "--version")
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// iptablesWrapper installs deploy/iptables-wrapper into a new directory
// as the image's Dockerfile does into /usr/sbin (iptables-wrapper
// --install) and returns the directory, to be put first on PATH.
func iptablesWrapper(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "iptables-wrapper"))
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "iptables-wrapper")
	if err := os.WriteFile(wrapper, script, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(wrapper, "--install").CombinedOutput(); err != nil {
		t.Fatalf("iptables-wrapper --install: %v\n%s", err, out)
	}
	return dir
}

// dockerOnLegacy sets up, with iptables-legacy, what Docker sets up on a
// host that uses it: FORWARD policy DROP and its chains (more rules than
// nft has, which is how the wrapper tells the mode).
func dockerOnLegacy(t *testing.T, ns testbed.NS) {
	t.Helper()
	for _, args := range [][]string{
		{"-P", "FORWARD", "DROP"},
		{"-N", "DOCKER"}, {"-N", "DOCKER-USER"}, {"-N", "DOCKER-ISOLATION-STAGE-1"},
		{"-A", "FORWARD", "-j", "DOCKER-USER"},
		{"-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
		{"-A", "FORWARD", "-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-A", "FORWARD", "-o", "docker0", "-j", "DOCKER"},
		{"-A", "DOCKER-USER", "-j", "RETURN"},
		{"-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN"},
	} {
		ns.Exec(t, append([]string{"iptables-legacy"}, args...)...)
	}
}

// TestIPTablesWrapperMode: the wrapper picks the host's mode as
// kubernetes-sigs/iptables-wrappers does, points the links at it and runs
// the command there.
func TestIPTablesWrapperMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, ns testbed.NS)
		want  string
	}{
		{"no rules: nft", func(*testing.T, testbed.NS) {}, "nft"},
		{"docker on legacy", dockerOnLegacy, "legacy"},
		{"more nft rules", func(t *testing.T, ns testbed.NS) {
			ns.Exec(t, "iptables-legacy", "-A", "INPUT", "-j", "ACCEPT")
			for _, chain := range []string{"INPUT", "FORWARD", "OUTPUT"} {
				ns.Exec(t, "iptables-nft", "-A", chain, "-j", "ACCEPT")
			}
		}, "nft"},
		{"kubelet's hint in legacy outweighs counts", func(t *testing.T, ns testbed.NS) {
			ns.Exec(t, "iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
			for _, chain := range []string{"INPUT", "FORWARD", "OUTPUT"} {
				ns.Exec(t, "ip6tables-nft", "-A", chain, "-j", "ACCEPT")
			}
		}, "legacy"},
		{"kubelet's canary in nft", func(t *testing.T, ns testbed.NS) {
			dockerOnLegacy(t, ns)
			ns.Exec(t, "ip6tables-nft", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
		}, "nft"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testbed.Namespace(t, "ipw")
			tc.setup(t, ns)
			dir := iptablesWrapper(t)
			out := ns.Exec(t, "env", "PATH="+dir+":"+os.Getenv("PATH"), "ip6tables-save", "--version")
			want := map[string]string{"nft": "(nf_tables)", "legacy": "(legacy)"}[tc.want]
			if !strings.HasPrefix(out, "ip6tables-save v") || !strings.Contains(out, want) {
				t.Errorf("ip6tables-save --version through the wrapper: %q, want %s", out, want)
			}
			for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
				if link, err := os.Readlink(filepath.Join(dir, cmd)); err != nil || filepath.Base(link) != "xtables-"+tc.want+"-multi" {
					t.Errorf("%s -> %s (%v), want xtables-%s-multi", cmd, link, err, tc.want)
				}
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) > 0 {
				t.Errorf("temporary links left: %v", leftovers)
			}
		})
	}
}

// TestIPTablesWrapperLegacyHost is issue 21's seventh case: two hosts whose
// firewall lives in iptables-legacy with FORWARD policy DROP (Docker on a
// legacy host). flannelu with Debian's iptables (nft, what the image ran)
// writes its FLANNEL-FWD rules where they do not help, and pods cannot
// reach each other; flannelu through the image's iptables-wrapper writes
// them into iptables-legacy, and pod traffic flows.
func TestIPTablesWrapperLegacyHost(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-ipw", 2, ipv4.config("host-gw"))
	for _, h := range c.Hosts {
		dockerOnLegacy(t, h.NS)
	}
	fwd := regexp.MustCompile(`(?m)^-A FLANNEL-FWD -s 198\.18\.0\.0/16 .*-j ACCEPT$`)
	waitRule := func(h *testbed.Host, save string) {
		t.Helper()
		if err := testbed.Eventually(30*time.Second, func() error {
			out, err := h.Run(save)
			if err == nil && !fwd.MatchString(out) {
				err = fmt.Errorf("%s: no FLANNEL-FWD rule in %s yet:\n%s", h.Name, save, out)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	// Debian's iptables, as the image had it: the rules land in nft.
	nodes := []*testbed.Node{startNode(t, c, 1), startNode(t, c, 2)}
	for _, n := range nodes {
		if err := n.AddPods(1); err != nil {
			t.Fatal(err)
		}
		waitRule(n.Host, "iptables-nft-save")
	}
	p1, p2 := c.Hosts[0].Pods[0], c.Hosts[1].Pods[0]
	c.Hosts[0].Exec(t, "ip", "route", "get", p2.Addr.String()) // routed: only the firewall stands in the way
	if out, err := p1.Run("ping", "-n", "-c", "2", "-W", "1", p2.Addr.String()); err == nil {
		t.Fatalf("with the rules in nft, legacy's FORWARD DROP should stop pod traffic, yet:\n%s", out)
	}
	for _, n := range nodes {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}

	// The image's iptables: the wrapper picks legacy on these hosts.
	dir := iptablesWrapper(t)
	wrapped := filepath.Join(c.Dir, "flannelu-in-image")
	if err := os.WriteFile(wrapped, []byte("#!/bin/sh\nPATH="+dir+":$PATH exec "+flannelu+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.Opts.Flannelu = wrapped
	for i, before := range nodes {
		n := startNode(t, c, i+1)
		if n.Env.Subnet != before.Env.Subnet { // the pods' addresses are in it
			t.Fatalf("host %d came back with subnet %v, was %v", i+1, n.Env.Subnet, before.Env.Subnet)
		}
		waitRule(n.Host, "iptables-legacy-save")
	}
	waitPing(t, p1, p2.Addr)
	waitPing(t, p2, p1.Addr)
	if link, err := os.Readlink(filepath.Join(dir, "iptables")); err != nil || filepath.Base(link) != "xtables-legacy-multi" {
		t.Errorf("the wrapper's iptables -> %s (%v), want xtables-legacy-multi", link, err)
	}
}
