package hostgw

import (
	"context"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
	"github.com/flannelu/flannelu/testbed/kerneltest"
)

var (
	network6 = kerneltest.NetworkV6
	own1v6   = netip.MustParsePrefix("2001:db8:100:1::/64")
	// IPv6 peers: {subnet, PublicIPv6}.
	p2v6 = [2]string{"2001:db8:100:2::/64", "2001:db8:0:1::2"}
	p3v6 = [2]string{"2001:db8:100:3::/64", "2001:db8:0:1::3"}
)

// node6 is node with 2001:db8:0:1::1/64 on ext0 too.
func node6(t testing.TB) *kerneltest.Namespace {
	t.Helper()
	testbed.RequireRoot(t)
	return kerneltest.DualNode(t, "gw6")
}

// running6 runs a backend for IPv6 (and IPv4 when v4) on node6's ext0.
func running6(t *testing.T, ns *kerneltest.Namespace, v4 bool) *Backend {
	t.Helper()
	return running6Every(t, ns, v4, testInterval)
}

// running6Every is running6 with another reconcile interval.
func running6Every(t *testing.T, ns *kerneltest.Namespace, v4 bool, interval time.Duration) *Backend {
	t.Helper()
	opts := Options{IPv6Network: network6, ReconcileInterval: interval, Logger: kerneltest.Logger(t), Netlink: ns.NL}
	own := subnet.Lease{IPv6Subnet: own1v6}
	if v4 {
		opts.Network, own.Subnet = network, own1
	}
	b, err := New(ns.External(t, "ext0", "192.0.2.1/24", "2001:db8:0:1::1/64"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if own.Attrs, err = b.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantAttrs := subnet.LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1"), BackendType: "host-gw"}
	if v4 {
		wantAttrs.PublicIP = netip.MustParseAddr("192.0.2.1")
	}
	if !own.Attrs.Equal(wantAttrs) {
		t.Fatalf("lease attrs %+v, want %+v", own.Attrs, wantAttrs)
	}
	if err := b.Start(context.Background(), own); err != nil {
		t.Fatal(err)
	}
	kerneltest.RunBackend(t, b)
	return b
}

// gwLease6 is a host-gw lease with IPv6 {subnet, PublicIPv6}; v4 empty
// makes it IPv6-only.
func gwLease6(v4, v6 [2]string) subnet.Lease {
	l := subnet.Lease{IPv6Subnet: netip.MustParsePrefix(v6[0]), Attrs: subnet.LeaseAttrs{
		PublicIPv6: netip.MustParseAddr(v6[1]), BackendType: "host-gw"}}
	if v4[0] != "" {
		l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(v4[0]), netip.MustParseAddr(v4[1])
	}
	return l
}

// peerRoutes6 reads `ip -6 -j route show dev ext0` without the kernel's
// own routes.
func peerRoutes6(t *testing.T, ns *kerneltest.Namespace) []kerneltest.Route {
	t.Helper()
	var all []kerneltest.Route
	out := []kerneltest.Route{}
	ns.JSON(t, &all, "ip", "-6", "route", "show", "dev", "ext0")
	for _, r := range all {
		if r.Protocol != "kernel" {
			r.Protocol = ""
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dst < out[j].Dst })
	return out
}

// assertRoutes6 compares ext0's IPv6 routes with flanneld's host-gw
// layout: `<IPv6 subnet> via <PublicIPv6> dev ext0`.
func assertRoutes6(t *testing.T, ns *kerneltest.Namespace, peers ...[2]string) {
	t.Helper()
	want := flannelRoutes(peers...)
	if want == nil {
		want = []kerneltest.Route{}
	}
	if got := peerRoutes6(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("IPv6 routes on ext0:\n got %+v\nwant %+v", got, want)
	}
}

func TestIPv6PeersAddRemoveChange(t *testing.T) {
	ns := node6(t)
	b := running6(t, ns, true)
	ctx := context.Background()
	b.HandleEvents(ctx, added(gwLease6(p2, p2v6), gwLease6(p3, p3v6)))
	assertRoutes(t, ns, flannelRoutes(p2, p3))
	assertRoutes6(t, ns, p2v6, p3v6)

	b.HandleEvents(ctx, []subnet.Event{{Type: subnet.EventRemoved, Lease: gwLease6(p3, p3v6)}})
	assertRoutes(t, ns, flannelRoutes(p2))
	assertRoutes6(t, ns, p2v6)

	updates := ns.SubscribeRoutes(t)
	moved := [2]string{p2v6[0], "2001:db8:0:1::22"}
	b.HandleEvents(ctx, []subnet.Event{{Type: subnet.EventChanged, Lease: gwLease6(p2, moved)}})
	assertRoutes6(t, ns, moved)
	log := kerneltest.LogOf(t, b.log)
	passes := log.Passes()
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= passes+2 })
	if n := b.PeerErrors(); n != 0 {
		t.Errorf("PeerErrors = %d", n)
	}
}

func TestIPv6OnlyRoutes(t *testing.T) {
	ns := node6(t)
	b := running6(t, ns, false)
	b.HandleEvents(context.Background(), added(gwLease6([2]string{}, p2v6), gwLease6([2]string{}, p3v6)))
	assertRoutes6(t, ns, p2v6, p3v6)
	assertRoutes(t, ns, nil)
	if b.MTU() != 1500 {
		t.Errorf("MTU %d, want the interface's 1500", b.MTU())
	}
}

func TestIPv6ReconcileRestoresAndPrunes(t *testing.T) {
	ns := node6(t)
	b := running6(t, ns, true)
	b.HandleEvents(context.Background(), added(gwLease6(p2, p2v6), gwLease6(p3, p3v6)))
	ns.IP(t, "-6", "route", "del", p2v6[0])
	ns.IP(t, "-6", "route", "add", "2001:db8:100:7::/64", "via", "2001:db8:0:1::7", "dev", "ext0") // stale, ours
	ns.IP(t, "-6", "route", "add", "2001:db8:200::/48", "via", "2001:db8:0:1::9", "dev", "ext0")   // outside the network
	want := append(flannelRoutes(p2v6, p3v6), kerneltest.Route{Dst: "2001:db8:200::/48", Gateway: "2001:db8:0:1::9", Flags: []string{}})
	log := kerneltest.LogOf(t, b.log)
	log.WaitPasses(t, log.Passes()+2) // the second pass saw the hand edits whole
	if got := peerRoutes6(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("after two reconcile passes:\ngot  %+v\nwant %+v", got, want)
	}
	assertRoutes(t, ns, flannelRoutes(p2, p3))
}

func TestIPv6RestartKeepsRoutes(t *testing.T) {
	ns := node6(t)
	peers := added(gwLease6(p2, p2v6), gwLease6(p3, p3v6))
	first := running6(t, ns, true)
	first.HandleEvents(context.Background(), peers)
	assertRoutes6(t, ns, p2v6, p3v6)

	updates := ns.SubscribeRoutes(t)
	second := running6Every(t, ns, true, restartInterval) // a restarted daemon, before its peer list arrives
	log := kerneltest.LogOf(t, second.log)
	log.WaitCount(t, kernel.ReconcileStarted, 1)
	second.HandleEvents(context.Background(), peers)
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= 2 })
	assertRoutes6(t, ns, p2v6, p3v6)
}

func TestIPv6RefusesPublicIPv6NotOnInterface(t *testing.T) {
	ns := node6(t)
	ext := ns.External(t, "ext0", "192.0.2.1/24", "2001:db8:0:1::1/64")
	ext.ExtV6Addr = netip.MustParseAddr("2001:db8:0:9::1")
	_, err := New(ext, Options{Network: network, IPv6Network: network6, Netlink: ns.NL})
	if err == nil || !strings.Contains(err.Error(), "2001:db8:0:9::1") || !strings.Contains(err.Error(), "--public-ipv6") {
		t.Fatalf("New with public IPv6 != iface IPv6: err = %v, want a refusal naming both", err)
	}
	_, err = New(ns.External(t, "ext0", "192.0.2.1/24"), Options{IPv6Network: network6, Netlink: ns.NL})
	if err == nil || !strings.Contains(err.Error(), "needs an IPv6 address on ext0") {
		t.Fatalf("New without an IPv6 interface address: %v", err)
	}
}

// A dual-stack peer without a PublicIPv6 keeps its IPv4 route. (An
// unusable one, such as link-local, is the daemon's Validator's to refuse.)
func TestIPv6MissingPublicIPv6KeepsIPv4(t *testing.T) {
	ns := node6(t)
	b := running6(t, ns, true)
	l := gwLease6(p2, p2v6)
	l.Attrs.PublicIPv6 = netip.Addr{}
	b.HandleEvents(context.Background(), added(l))
	assertRoutes(t, ns, flannelRoutes(p2))
	assertRoutes6(t, ns)
	if n := b.PeerErrors(); n != 1 {
		t.Errorf("PeerErrors = %d, want 1 (no PublicIPv6)", n)
	}
}

func TestIPv6ForwardingBetweenPods(t *testing.T) {
	testbed.RequireRoot(t)
	a, b := kerneltest.TwoHosts(t)
	kerneltest.DualStack(t, a, b)
	var backends [2]*Backend
	var leases [2]subnet.Lease
	for i, h := range []*kerneltest.Host{a, b} {
		be, err := New(h.External(t, h.Ext, h.Addr.String(), h.Addr6.String()), Options{
			Network: network, IPv6Network: network6, ReconcileInterval: testInterval, Netlink: h.NL, Logger: kerneltest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := be.Init(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = subnet.Lease{Subnet: h.Subnet, IPv6Subnet: h.Subnet6, Attrs: attrs}
		if err := be.Start(context.Background(), leases[i]); err != nil {
			t.Fatal(err)
		}
		backends[i] = be
	}
	backends[0].HandleEvents(context.Background(), added(leases[1]))
	backends[1].HandleEvents(context.Background(), added(leases[0]))
	for _, dst := range []netip.Addr{b.PodIP, b.PodIP6} {
		if out, err := a.Ping(t, dst); err != nil {
			t.Fatalf("pod ping %v over host-gw: %v\n%s", dst, err, out)
		}
	}
}
