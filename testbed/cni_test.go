package testbed

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/subnet"
)

// cniHost is a one-host bed whose pods come from the CNI chain reading a
// subnet.env written here, as flannelu would write it.
func cniHost(t *testing.T, name string, env string) (*Bed, *CNIChain) {
	t.Helper()
	RequireRoot(t)
	b, err := New(Options{Name: name, Hosts: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	file := filepath.Join(b.Dir, "flannel", "subnet.env")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := b.Hosts[0].UseCNI([]byte(FlannelConflist), file)
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

func TestCNIChainAddDel(t *testing.T) {
	env, err := subnet.MarshalEnv(subnet.Env{Network: netip.MustParsePrefix("198.18.0.0/16"),
		Subnet: netip.MustParsePrefix("198.18.7.0/24"), MTU: 1472})
	if err != nil {
		t.Fatal(err)
	}
	b, c := cniHost(t, "cni", string(env))
	if err := c.AddPods(2); err != nil {
		t.Fatal(err)
	}
	h := b.Hosts[0]
	a, p2 := h.Pods[0], h.Pods[1]
	if want := []netip.Addr{netip.MustParseAddr("198.18.7.2"), netip.MustParseAddr("198.18.7.3")}; a.Addr != want[0] || p2.Addr != want[1] {
		t.Fatalf("pods got %s and %s from host-local, want %v", a.Addr, p2.Addr, want)
	}
	if _, err := Ping(a.NS, p2.Addr.String(), 1); err != nil {
		t.Errorf("pods on one bridge: %v", err)
	}
	if err := c.DelPod(a); err != nil {
		t.Fatal(err)
	}
	if held, _ := c.Reserved(); !slices.Equal(held, []netip.Addr{p2.Addr}) {
		t.Errorf("host-local holds %v after deleting %s, want only %s", held, a.Addr, p2.Addr)
	}
	if exists(a.Name) || len(h.Pods) != 1 {
		t.Errorf("deleted pod %s: namespace left %v, host lists %d pods", a.Name, exists(a.Name), len(h.Pods))
	}
	// Close deletes the rest through CNI DEL too, releasing the address.
	b.Close()
	if held, err := c.Reserved(); err != nil || len(held) != 0 {
		t.Errorf("host-local holds %v after Close (%v), want nothing", held, err)
	}
}

// A failing ADD (the flannel plugin rejects a subnet.env without
// FLANNEL_MTU) is reported with the plugin's reason and leaves nothing:
// no pod, no namespace, no reserved address.
func TestCNIChainFailedAddLeavesNothing(t *testing.T) {
	b, c := cniHost(t, "cnibad", "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.8.1/24\nFLANNEL_IPMASQ=false\n")
	_, err := c.AddPod()
	if err == nil || !strings.Contains(err.Error(), "FLANNEL_MTU") {
		t.Fatalf("ADD with a subnet.env lacking FLANNEL_MTU: %v, want the plugin's complaint", err)
	}
	if h := b.Hosts[0]; len(h.Pods) != 0 || exists(b.nsName("h1p1")) {
		t.Errorf("failed ADD left pods %v or namespace %s", h.Pods, b.nsName("h1p1"))
	}
	if held, _ := c.Reserved(); len(held) != 0 {
		t.Errorf("failed ADD left host-local holding %v", held)
	}
}

func TestCNIChainRefusesWhatCannotWork(t *testing.T) {
	RequireRoot(t)
	b, err := New(Options{Name: "cniconf", Hosts: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	h := b.Hosts[0]
	file := filepath.Join(b.Dir, "subnet.env")
	if _, err := h.UseCNI([]byte(`{"plugins":[]}`), file); err == nil {
		t.Error("a conflist without a network name was accepted")
	}
	c, err := h.UseCNI([]byte(FlannelConflist), file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPod(); err == nil || !strings.Contains(err.Error(), "no subnet.env yet") {
		t.Errorf("ADD before flannelu wrote subnet.env: %v, want a clear error", err)
	}
	if err := h.AddPods(1, netip.MustParsePrefix("198.18.9.1/24"), 1472); err == nil {
		t.Error("a CNI host accepted hand-wired pods beside the chain's")
	}
}
