package kerneltest

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/testbed"
)

// IPv6 prefixes of the kernel backends' tests: the underlay and the pod
// network of the project's documentation space.
var (
	UnderlayV6 = netip.MustParsePrefix("2001:db8:0:1::/64")
	NetworkV6  = netip.MustParsePrefix("2001:db8:100::/48")
)

// AddrV6 adds an IPv6 address to a link without duplicate address
// detection, so that it is usable at once (a tentative address cannot be
// a VXLAN source or a route's gateway target yet).
func (n *Namespace) AddrV6(t testing.TB, link, addr string) {
	t.Helper()
	n.IP(t, "-6", "addr", "add", addr, "dev", link, "nodad")
}

// DualStack gives hosts made by TwoHosts their IPv6 half, host i (1-based
// in order) getting: 2001:db8:0:1::<i>/64 on the underlay, the lease
// 2001:db8:100:<i>::/64, cni0 at 2001:db8:100:<i>::1 and the pod at
// 2001:db8:100:<i>::2 with its default route via cni0, and IPv6
// forwarding on. It returns once every address has left duplicate address
// detection, as CNI plugins wait for it: a pod answers no neighbour
// solicitation before (about 2 s, measured).
func DualStack(t testing.TB, hosts ...*Host) {
	t.Helper()
	for i, h := range hosts {
		n := i + 1
		h.Addr6 = netip.MustParsePrefix(fmt.Sprintf("2001:db8:0:1::%d/64", n))
		h.Subnet6 = netip.MustParsePrefix(fmt.Sprintf("2001:db8:100:%d::/64", n))
		h.PodIP6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:100:%d::2", n))
		gw := fmt.Sprintf("2001:db8:100:%d::1", n)
		if out, err := h.Exec(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"); err != nil {
			t.Fatalf("enable IPv6 forwarding in %s: %v: %s", h.Name, err, out)
		}
		h.AddrV6(t, h.Ext, h.Addr6.String())
		h.AddrV6(t, "cni0", gw+"/64")
		h.Pod.AddrV6(t, "eth0", h.PodIP6.String()+"/64")
		h.Pod.IP(t, "-6", "route", "add", "default", "via", gw)
	}
	for _, h := range hosts {
		h.SettleV6(t)
		h.Pod.SettleV6(t)
	}
}

// SettleV6 waits until no IPv6 address in the namespace is tentative
// (still in duplicate address detection, which the kernel runs for about
// a second on every new link-local address).
func (n *Namespace) SettleV6(t testing.TB) {
	t.Helper()
	if err := (testbed.NS{Name: n.Name}).SettleV6(EventDeadline); err != nil {
		t.Fatal(err)
	}
}

// DualNode is a namespace whose ext0 has 192.0.2.1/24 and
// 2001:db8:0:1::1/64, joined by a veth to a far end at 192.0.2.99 and
// 2001:db8:0:1::99: a kernel backend's host on a dual-stack underlay.
func DualNode(t testing.TB, role string) *Namespace {
	t.Helper()
	ns := NewNamespace(t, role)
	far := NewNamespace(t, "far"+role)
	Veth(t, ns, "ext0", "192.0.2.1/24", far, "ext0", "192.0.2.99/24")
	ns.AddrV6(t, "ext0", "2001:db8:0:1::1/64")
	far.AddrV6(t, "ext0", "2001:db8:0:1::99/64")
	return ns
}

// RunBackend runs be.Run until the test ends, and fails the test if Run
// then returns anything but nil.
func RunBackend(t testing.TB, be backend.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- be.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
}
