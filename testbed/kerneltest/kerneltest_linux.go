// Package kerneltest builds throw-away network namespaces for the kernel
// backends' root tests and reads their state back with iproute2, the way
// an operator would look at a flannel node.
//
// Namespace approach: each Namespace is created with `ip netns add` and
// the backend under test gets a netlink.Handle bound to it
// (netlink.NewHandleAt), so no goroutine ever switches namespace. All
// namespaces are deleted in t.Cleanup, also when the test fails.
package kerneltest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/testbed"
)

// Namespace is one test network namespace.
type Namespace struct {
	Name string
	NS   netns.NsHandle
	NL   *netlink.Handle // bound to NS; closed in Cleanup
}

var seq atomic.Uint32

// NewNamespace creates a namespace with loopback up, removed in t.Cleanup.
func NewNamespace(t testing.TB, role string) *Namespace {
	t.Helper()
	name := fmt.Sprintf("%s%s%d", testbed.OwnPrefix(), role, seq.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(nl.Close)
	n := &Namespace{Name: name, NS: ns, NL: nl}
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// IP runs `ip -n <ns> args...` and fails the test on error.
func (n *Namespace) IP(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace (ip netns exec).
func (n *Namespace) Exec(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// JSON runs an iproute2 tool (ip or bridge) with -j in the namespace and
// decodes its output into v.
func (n *Namespace) JSON(t testing.TB, v any, tool string, args ...string) {
	t.Helper()
	out := Run(t, tool, append([]string{"-j", "-n", n.Name}, args...)...)
	if strings.TrimSpace(out) == "" {
		out = "[]"
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s %v: decode %q: %v", tool, args, out, err)
	}
}

// Run runs a command and fails the test with its output on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Veth connects a and b with a veth pair, gives each end an address
// (empty: none) and brings both up.
func Veth(t testing.TB, a *Namespace, aName, aAddr string, b *Namespace, bName, bAddr string) {
	t.Helper()
	a.IP(t, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	for _, end := range []struct {
		ns         *Namespace
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if end.addr != "" {
			end.ns.IP(t, "addr", "add", end.addr, "dev", end.name)
		}
		end.ns.IP(t, "link", "set", end.name, "up")
	}
}

// External describes link name in n as the backend's external interface,
// with each of addrs (prefixes like 192.0.2.1/24 or 2001:db8:0:1::1/64)
// as both interface and public address of its family.
func (n *Namespace) External(t testing.TB, name string, addrs ...string) *backend.ExternalInterface {
	t.Helper()
	link, err := n.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, n.Name, err)
	}
	la := link.Attrs()
	ext := &backend.ExternalInterface{
		Iface: &net.Interface{Index: la.Index, MTU: la.MTU, Name: la.Name, HardwareAddr: la.HardwareAddr, Flags: la.Flags},
	}
	for _, s := range addrs {
		a := netip.MustParsePrefix(s).Addr()
		if a.Is4() {
			ext.IfaceAddr, ext.ExtAddr = a, a
		} else {
			ext.IfaceV6Addr, ext.ExtV6Addr = a, a
		}
	}
	return ext
}

// Route is one entry of `ip -j route`.
type Route struct {
	Dst      string   `json:"dst"`
	Gateway  string   `json:"gateway"`
	Dev      string   `json:"dev"`
	Protocol string   `json:"protocol"`
	Flags    []string `json:"flags"`
}

// Neigh is one entry of `ip -j neigh show dev X`.
type Neigh struct {
	Dst    string   `json:"dst"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// FDB is one entry of `bridge -j fdb show dev X`.
type FDB struct {
	MAC   string   `json:"mac"`
	Dst   string   `json:"dst"`
	Flags []string `json:"flags"`
	State string   `json:"state"`
}
