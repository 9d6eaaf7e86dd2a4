package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
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
	// IPv6 peers: {subnet, PublicIPv6, VtepMAC of flannel-v6.1}.
	peer2v6 = [3]string{"2001:db8:100:2::/64", "2001:db8:0:1::2", "02:00:5e:00:62:02"}
	peer3v6 = [3]string{"2001:db8:100:3::/64", "2001:db8:0:2::3", "02:00:5e:00:63:03"}
)

// node6 is node with the IPv6 underlay 2001:db8:0:1::1/64 on ext0 too.
func node6(t testing.TB) *kerneltest.Namespace {
	t.Helper()
	testbed.RequireRoot(t)
	return kerneltest.DualNode(t, "vx6")
}

// stack is which networks a test backend gets.
type stack struct{ v4, v6 bool }

var (
	dual   = stack{true, true}
	v6only = stack{false, true}
)

func (s stack) options(cfg string, interval time.Duration, t *testing.T, ns *kerneltest.Namespace) Options {
	o := Options{BackendJSON: []byte(cfg), ReconcileInterval: interval, Logger: kerneltest.Logger(t), Netlink: ns.NL}
	if s.v4 {
		o.Network = network
	}
	if s.v6 {
		o.IPv6Network = network6
	}
	return o
}

// running6 creates, initialises, starts and runs a backend for the stack
// on node6's ext0; Run is stopped (and must return nil) in t.Cleanup.
func running6(t *testing.T, ns *kerneltest.Namespace, s stack, cfg string) (*Backend, subnet.LeaseAttrs) {
	t.Helper()
	b, attrs := started6(t, ns, s, cfg, testInterval)
	kerneltest.RunBackend(t, b)
	return b, attrs
}

// started6 creates, initialises and starts a backend with a reconcile
// interval of its own.
func started6(t *testing.T, ns *kerneltest.Namespace, s stack, cfg string, interval time.Duration) (*Backend, subnet.LeaseAttrs) {
	t.Helper()
	b, err := New(ns.External(t, "ext0", "192.0.2.1/24", "2001:db8:0:1::1/64"), s.options(cfg, interval, t, ns))
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := b.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	own := subnet.Lease{IPv6Subnet: own1v6, Attrs: attrs}
	if s.v4 {
		own.Subnet = own1
	}
	if err := b.Start(context.Background(), own); err != nil {
		t.Fatal(err)
	}
	return b, attrs
}

// twoPasses waits until b has finished two reconcile passes after the
// call: the second saw whatever was changed before it.
func twoPasses(t *testing.T, b *Backend) {
	t.Helper()
	log := kerneltest.LogOf(t, b.log)
	log.WaitPasses(t, log.Passes()+2)
}

// dualLease is a dual-stack vxlan peer lease as flanneld writes it: v4 is
// {subnet, PublicIP, VtepMAC of flannel.1}, v6 the same for flannel-v6.1;
// an empty v4 makes an IPv6-only lease.
func dualLease(v4, v6 [3]string) subnet.Lease {
	l := subnet.Lease{IPv6Subnet: netip.MustParsePrefix(v6[0]), Attrs: subnet.LeaseAttrs{
		PublicIPv6: netip.MustParseAddr(v6[1]), BackendType: "vxlan",
		BackendV6Data: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, v6[2])),
	}}
	if v4[0] != "" {
		l.Subnet = netip.MustParsePrefix(v4[0])
		l.Attrs.PublicIP = netip.MustParseAddr(v4[1])
		l.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, v4[2]))
	}
	return l
}

// readLayoutOf is what `ip -6 route`, `ip -6 neigh` (permanent entries)
// and `bridge fdb` show for one device, without the kernel's own routes
// (its address and fe80::/64).
func readLayoutOf(t *testing.T, ns *kerneltest.Namespace, dev string) layout {
	t.Helper()
	var l layout
	var routes []kerneltest.Route
	ns.JSON(t, &routes, "ip", "-6", "route", "show", "dev", dev)
	for _, r := range routes {
		if r.Protocol != "kernel" {
			r.Protocol = ""
			l.Routes = append(l.Routes, r)
		}
	}
	var neighs []kerneltest.Neigh
	ns.JSON(t, &neighs, "ip", "-6", "neigh", "show", "dev", dev)
	for _, n := range neighs {
		if slices.Contains(n.State, "PERMANENT") {
			l.Neighs = append(l.Neighs, n)
		}
	}
	ns.JSON(t, &l.FDB, "bridge", "fdb", "show", "dev", dev)
	if l.Routes == nil {
		l.Routes = []kerneltest.Route{}
	}
	if l.Neighs == nil {
		l.Neighs = []kerneltest.Neigh{}
	}
	sort.Slice(l.Routes, func(i, j int) bool { return l.Routes[i].Dst < l.Routes[j].Dst })
	sort.Slice(l.Neighs, func(i, j int) bool { return l.Neighs[i].Dst < l.Neighs[j].Dst })
	sort.Slice(l.FDB, func(i, j int) bool { return l.FDB[i].MAC < l.FDB[j].MAC })
	return l
}

// assertLayout6 compares flannel-v6.1 with flanneld's IPv6 layout for the
// peers: `<subnet> via <subnet address> dev flannel-v6.1 onlink`, the
// neighbour `<subnet address> lladdr <VtepMAC> PERMANENT` and the fdb
// entry `<VtepMAC> dst <PublicIPv6> self permanent`.
func assertLayout6(t *testing.T, ns *kerneltest.Namespace, peers ...[3]string) {
	t.Helper()
	want := flannelLayout(peers...)
	if got := readLayoutOf(t, ns, "flannel-v6.1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("kernel state on flannel-v6.1:\n got %+v\nwant %+v", got, want)
	}
}

// vxlanLink is `ip -d -j link show` of a VXLAN device.
type vxlanLink struct {
	MTU      int    `json:"mtu"`
	Address  string `json:"address"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID       int    `json:"id"`
			Local6   string `json:"local6"` // iproute2's name for an IPv6 local address
			Link     string `json:"link"`
			Port     int    `json:"port"`
			Learning bool   `json:"learning"`
		} `json:"info_data"`
	} `json:"linkinfo"`
}

func readVxlanLink(t *testing.T, ns *kerneltest.Namespace, dev string) (vxlanLink, bool) {
	t.Helper()
	var links []vxlanLink
	if out, _ := ns.Exec(t, "ip", "link", "show", dev); strings.Contains(out, "does not exist") {
		return vxlanLink{}, false
	}
	ns.JSON(t, &links, "ip", "-d", "link", "show", dev)
	if len(links) != 1 {
		t.Fatalf("%s: %+v", dev, links)
	}
	return links[0], true
}

func TestIPv6DeviceAndLeaseAttrs(t *testing.T) {
	ns := node6(t)
	_, attrs := running6(t, ns, dual, `{"Type":"vxlan"}`)
	v4, ok4 := readVxlanLink(t, ns, "flannel.1")
	v6, ok6 := readVxlanLink(t, ns, "flannel-v6.1")
	if !ok4 || !ok6 {
		t.Fatalf("dual stack: flannel.1 exists %v, flannel-v6.1 exists %v", ok4, ok6)
	}
	d := v6.LinkInfo.Data
	got := fmt.Sprintf("%s id %d local %s dev %s dstport %d learning=%v mtu %d", v6.LinkInfo.Kind, d.ID, d.Local6, d.Link, d.Port, d.Learning, v6.MTU)
	if want := "vxlan id 1 local 2001:db8:0:1::1 dev ext0 dstport 8472 learning=false mtu 1430"; got != want {
		t.Errorf("flannel-v6.1: %s\nwant          %s (MTU: the kernel's cap over an IPv6 underlay)", got, want)
	}
	if v6.Address == v4.Address {
		t.Errorf("flannel-v6.1 shares flannel.1's MAC %s; flanneld gives each its own", v6.Address)
	}
	value, err := subnet.MarshalLeaseAttrs(attrs)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8:0:1::1","BackendType":"vxlan",`+
		`"BackendData":{"VNI":1,"VtepMAC":%q},"BackendV6Data":{"VNI":1,"VtepMAC":%q}}`, v4.Address, v6.Address)
	if string(value) != want {
		t.Errorf("lease value\n got %s\nwant %s (flanneld v0.20.2's dual-stack form)", value, want)
	}
	var addrs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	ns.JSON(t, &addrs, "ip", "-6", "addr", "show", "dev", "flannel-v6.1", "scope", "global")
	var global []string
	for _, l := range addrs {
		for _, a := range l.AddrInfo {
			if a.Local != "" { // ip -j prints the lifetimes of a filtered dump as an entry of their own
				global = append(global, fmt.Sprintf("%s/%d", a.Local, a.Prefixlen))
			}
		}
	}
	if !slices.Equal(global, []string{"2001:db8:100:1::/128"}) {
		t.Errorf("flannel-v6.1 global addresses %v, want exactly 2001:db8:100:1::/128", global)
	}
}

func TestIPv6OnlyHasOnlyTheIPv6Device(t *testing.T) {
	ns := node6(t)
	b, attrs := running6(t, ns, v6only, `{"Type":"vxlan"}`)
	if _, ok := readVxlanLink(t, ns, "flannel.1"); ok {
		t.Error("an IPv6-only network created flannel.1")
	}
	v6, ok := readVxlanLink(t, ns, "flannel-v6.1")
	if !ok {
		t.Fatal("no flannel-v6.1")
	}
	value, err := subnet.MarshalLeaseAttrs(attrs)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:0:1::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":%q}}`, v6.Address)
	if string(value) != want {
		t.Errorf("lease value\n got %s\nwant %s", value, want)
	}
	if b.MTU() != 1430 {
		t.Errorf("MTU() = %d, want 1500-70: IPv6-only pods get the IPv6 device's MTU", b.MTU())
	}
	b.HandleEvents(context.Background(), ev(subnet.EventAdded, dualLease([3]string{}, peer2v6)))
	assertLayout6(t, ns, peer2v6)
}

func TestIPv6PeersAddRemoveChange(t *testing.T) {
	ns := node6(t)
	b, _ := running6(t, ns, dual, `{"Type":"vxlan"}`)
	ctx := context.Background()
	b.HandleEvents(ctx, append(ev(subnet.EventAdded, dualLease(peer2, peer2v6)), ev(subnet.EventAdded, dualLease(peer3, peer3v6))...))
	assertLayout(t, ns, flannelLayout(peer2, peer3))
	assertLayout6(t, ns, peer2v6, peer3v6)

	b.HandleEvents(ctx, ev(subnet.EventRemoved, dualLease(peer3, peer3v6)))
	assertLayout(t, ns, flannelLayout(peer2))
	assertLayout6(t, ns, peer2v6)

	// Changed: new PublicIPv6 and MAC; the IPv6 route is replaced in place.
	updates := ns.SubscribeRoutes(t)
	moved := [3]string{peer2v6[0], "2001:db8:0:3::2", "02:00:5e:00:62:99"}
	b.HandleEvents(ctx, ev(subnet.EventChanged, dualLease(peer2, moved)))
	assertLayout6(t, ns, moved)
	log := kerneltest.LogOf(t, b.log)
	passes := log.Passes()
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= passes+2 })
	if n := b.PeerErrors(); n != 0 {
		t.Errorf("PeerErrors = %d", n)
	}
}

// A dual-stack peer without BackendV6Data (a flannelu or flanneld that
// publishes none) keeps its IPv4 entries; flanneld would drop the whole
// lease.
func TestIPv6HalfMissingKeepsIPv4(t *testing.T) {
	ns := node6(t)
	b, _ := running6(t, ns, dual, `{"Type":"vxlan"}`)
	l := dualLease(peer2, peer2v6)
	l.Attrs.BackendV6Data = nil
	b.HandleEvents(context.Background(), ev(subnet.EventAdded, l))
	assertLayout(t, ns, flannelLayout(peer2))
	assertLayout6(t, ns)
	if n := b.PeerErrors(); n != 1 {
		t.Errorf("PeerErrors = %d, want 1 (the IPv6 half)", n)
	}
	// Once it publishes BackendV6Data, its IPv6 entries appear.
	b.HandleEvents(context.Background(), ev(subnet.EventChanged, dualLease(peer2, peer2v6)))
	assertLayout6(t, ns, peer2v6)
}

func TestIPv6ReconcileRestoresAndPrunes(t *testing.T) {
	ns := node6(t)
	b, _ := running6(t, ns, dual, `{"Type":"vxlan"}`)
	b.HandleEvents(context.Background(), append(ev(subnet.EventAdded, dualLease(peer2, peer2v6)), ev(subnet.EventAdded, dualLease(peer3, peer3v6))...))
	want := flannelLayout(peer2v6, peer3v6)
	ns.IP(t, "-6", "route", "del", peer2v6[0], "dev", "flannel-v6.1")
	ns.IP(t, "-6", "neigh", "del", "2001:db8:100:3::", "dev", "flannel-v6.1")
	kerneltest.Run(t, "bridge", "-n", ns.Name, "fdb", "del", peer2v6[2], "dev", "flannel-v6.1", "dst", peer2v6[1])
	// Stale entries of a peer nobody announces go; others' routes stay.
	ns.IP(t, "-6", "route", "add", "2001:db8:100:7::/64", "via", "2001:db8:100:7::", "dev", "flannel-v6.1", "onlink")
	ns.IP(t, "-6", "neigh", "add", "2001:db8:100:7::", "lladdr", "02:00:5e:00:07:07", "dev", "flannel-v6.1", "nud", "permanent")
	kerneltest.Run(t, "bridge", "-n", ns.Name, "fdb", "add", "02:00:5e:00:07:07", "dev", "flannel-v6.1", "dst", "2001:db8:0:1::7", "self", "permanent")
	ns.IP(t, "-6", "route", "add", "2001:db8:100:8::/64", "via", "2001:db8:0:1::8", "dev", "ext0") // other device
	ns.IP(t, "-6", "route", "add", "2001:db8:200::/48", "via", "2001:db8:0:1::9", "dev", "ext0")   // outside the network
	twoPasses(t, b)
	if got := readLayoutOf(t, ns, "flannel-v6.1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after two reconcile passes:\ngot  %+v\nwant %+v", got, want)
	}
	assertLayout(t, ns, flannelLayout(peer2, peer3)) // the IPv4 side untouched
	for _, dst := range []string{"2001:db8:100:8::/64", "2001:db8:200::/48"} {
		if out := ns.IP(t, "-6", "route", "show", dst); out == "" {
			t.Errorf("route %s we do not own was removed", dst)
		}
	}
	// A stale global address on the device goes too; link-local stays.
	ns.AddrV6(t, "flannel-v6.1", "2001:db8:100:9::/128")
	twoPasses(t, b)
	if out := ns.IP(t, "-6", "addr", "show", "dev", "flannel-v6.1"); strings.Contains(out, "2001:db8:100:9::") ||
		!strings.Contains(out, "2001:db8:100:1::/128") || !strings.Contains(out, "fe80::") {
		t.Errorf("flannel-v6.1 addresses after reconcile:\n%s", out)
	}
}

func TestIPv6RestartKeepsEntries(t *testing.T) {
	ns := node6(t)
	peers := append(ev(subnet.EventAdded, dualLease(peer2, peer2v6)), ev(subnet.EventAdded, dualLease(peer3, peer3v6))...)
	first, attrs1 := started6(t, ns, dual, `{"Type":"vxlan"}`, testInterval)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	first.HandleEvents(context.Background(), peers)
	kerneltest.LogOf(t, first.log).WaitPasses(t, 2) // the running daemon reconciles with its peers in place
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertLayout6(t, ns, peer2v6, peer3v6) // left in place on return

	updates := ns.SubscribeRoutes(t)
	// The restarted daemon's peer list arrives after Run started and
	// before its first pass, one (longer) interval later.
	second, attrs2 := started6(t, ns, dual, `{"Type":"vxlan"}`, restartInterval)
	kerneltest.RunBackend(t, second)
	if string(attrs1.BackendV6Data) != string(attrs2.BackendV6Data) {
		t.Errorf("flannel-v6.1's VtepMAC changed on restart: %s -> %s", attrs1.BackendV6Data, attrs2.BackendV6Data)
	}
	log := kerneltest.LogOf(t, second.log)
	log.WaitCount(t, kernel.ReconcileStarted, 1)
	second.HandleEvents(context.Background(), peers)
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= 2 })
	assertLayout6(t, ns, peer2v6, peer3v6)
	assertLayout(t, ns, flannelLayout(peer2, peer3))
}

func TestIPv6DirectRouting(t *testing.T) {
	ns := node6(t)
	b, _ := running6(t, ns, dual, `{"Type":"vxlan","DirectRouting":true}`)
	onLink := [3]string{peer2v6[0], "2001:db8:0:1::2", peer2v6[2]} // on ext0's /64
	b.HandleEvents(context.Background(), append(ev(subnet.EventAdded, dualLease(peer2, onLink)),
		ev(subnet.EventAdded, dualLease(peer3, peer3v6))...))
	assertLayout6(t, ns, peer3v6) // 2001:db8:0:2::3 is off-link: vxlan
	if out := ns.IP(t, "-6", "route", "show", onLink[0]); !strings.Contains(out, "via 2001:db8:0:1::2 dev ext0") {
		t.Errorf("direct IPv6 route for the on-link peer: %q", out)
	}
	ns.IP(t, "-6", "route", "del", onLink[0])
	twoPasses(t, b)
	if out := ns.IP(t, "-6", "route", "show", onLink[0]); !strings.Contains(out, "via 2001:db8:0:1::2 dev ext0") {
		t.Fatalf("direct IPv6 route not restored by two reconcile passes: %q", out)
	}
}

func TestIPv6NeedsAnIPv6Underlay(t *testing.T) {
	ns := node(t) // IPv4 only
	_, err := New(ns.External(t, "ext0", "192.0.2.1/24"), dual.options(`{"Type":"vxlan"}`, testInterval, t, ns))
	if err == nil || !strings.Contains(err.Error(), "needs an IPv6 address on ext0") {
		t.Fatalf("New without an IPv6 interface address: %v", err)
	}
}

func TestIPv6ForwardingBetweenPods(t *testing.T) {
	testbed.RequireRoot(t)
	a, b := kerneltest.TwoHosts(t)
	kerneltest.DualStack(t, a, b)
	var leases [2]subnet.Lease
	var backends [2]*Backend
	for i, h := range []*kerneltest.Host{a, b} {
		be, err := New(h.External(t, h.Ext, h.Addr.String(), h.Addr6.String()), Options{
			Network: network, IPv6Network: network6, ReconcileInterval: testInterval, Netlink: h.NL,
			Logger: kerneltest.Logger(t),
		})
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
	backends[0].HandleEvents(context.Background(), ev(subnet.EventAdded, leases[1]))
	backends[1].HandleEvents(context.Background(), ev(subnet.EventAdded, leases[0]))
	for _, dst := range []netip.Addr{b.PodIP, b.PodIP6} {
		if out, err := a.Ping(t, dst); err != nil {
			t.Fatalf("pod ping %v over vxlan: %v\n%s", dst, err, out)
		}
	}
}
