package testbed

import (
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// cpusAllowed is the Cpus_allowed_list a command run in ns reports.
func cpusAllowed(t *testing.T, ns NS) string {
	t.Helper()
	out, err := ns.Run("grep", "Cpus_allowed_list", "/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "Cpus_allowed_list:"))
}

func TestPinHostsBindsHostsAndPods(t *testing.T) {
	RequireRoot(t)
	b, err := New(Options{Name: "pin", Hosts: 2, Direct: true, PinHosts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	for i, h := range b.Hosts {
		want := strconv.Itoa(i % runtime.NumCPU())
		if got := cpusAllowed(t, h.NS); got != want {
			t.Errorf("host %d runs on CPUs %q, want %q", h.Index, got, want)
		}
		if err := h.AddPods(1, netip.MustParsePrefix("198.18."+strconv.Itoa(h.Index)+".1/24"), 1472); err != nil {
			t.Fatal(err)
		}
		if got := cpusAllowed(t, h.Pods[0].NS); got != want {
			t.Errorf("pod of host %d runs on CPUs %q, want %q", h.Index, got, want)
		}
	}

	free, err := New(Options{Name: "nopin", Hosts: 1, Direct: false})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(free.Close)
	if got := cpusAllowed(t, free.Hosts[0].NS); runtime.NumCPU() > 1 && !strings.ContainsAny(got, "-,") {
		t.Errorf("an unpinned host runs on CPUs %q, want all of them", got)
	}
}

func TestNameInUseRefused(t *testing.T) {
	RequireRoot(t)
	b, err := New(Options{Name: "dup", Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b2, err := New(Options{Name: "dup", Hosts: 1}); err == nil {
		b2.Close()
		t.Fatal("a second open bed of the same name was built; its namespaces would be the first's")
	}
	b.Close()
	b3, err := New(Options{Name: "dup", Hosts: 1})
	if err != nil {
		t.Fatalf("the name of a closed bed is free again: %v", err)
	}
	b3.Close()
}
