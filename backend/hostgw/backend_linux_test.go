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

const (
	testInterval = 200 * time.Millisecond
	// restartInterval is the restart tests' reconcile interval: the
	// time a loaded machine has to deliver the peer list before the
	// first pass.
	restartInterval = time.Second
)

var (
	network = netip.MustParsePrefix("198.18.0.0/16")
	own1    = netip.MustParsePrefix("198.18.1.0/24")
)

// node is a namespace whose ext0 (192.0.2.1/24) is the external link.
func node(t testing.TB) *kerneltest.Namespace {
	t.Helper()
	testbed.RequireRoot(t)
	ns := kerneltest.NewNamespace(t, "gw")
	far := kerneltest.NewNamespace(t, "far")
	kerneltest.Veth(t, ns, "ext0", "192.0.2.1/24", far, "ext0", "192.0.2.99/24")
	return ns
}

func running(t *testing.T, ns *kerneltest.Namespace) *Backend {
	t.Helper()
	return runningEvery(t, ns, testInterval)
}

// runningEvery is running with another reconcile interval.
func runningEvery(t *testing.T, ns *kerneltest.Namespace, interval time.Duration) *Backend {
	t.Helper()
	b, err := New(ns.External(t, "ext0", "192.0.2.1/24"), Options{
		Network: network, ReconcileInterval: interval, Logger: kerneltest.Logger(t), Netlink: ns.NL,
	})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := b.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if attrs.BackendType != "host-gw" || attrs.PublicIP != netip.MustParseAddr("192.0.2.1") || attrs.BackendData != nil {
		t.Fatalf("lease attrs %+v", attrs)
	}
	if err := b.Start(context.Background(), subnet.Lease{Subnet: own1, Attrs: attrs}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
	return b
}

func gwLease(sn, public string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(public), BackendType: "host-gw"}}
}

func added(ls ...subnet.Lease) []subnet.Event {
	evs := make([]subnet.Event, len(ls))
	for i, l := range ls {
		evs[i] = subnet.Event{Type: subnet.EventAdded, Lease: l}
	}
	return evs
}

// peerRoutes reads `ip -j route show dev ext0` without the kernel's own
// connected route.
func peerRoutes(t *testing.T, ns *kerneltest.Namespace) []kerneltest.Route {
	t.Helper()
	var all, out []kerneltest.Route
	ns.JSON(t, &all, "ip", "route", "show", "dev", "ext0")
	for _, r := range all {
		if r.Protocol != "kernel" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dst < out[j].Dst })
	return out
}

// flannelRoutes is flanneld's layout: <subnet> via <PublicIP> dev ext0.
func flannelRoutes(pairs ...[2]string) []kerneltest.Route {
	var out []kerneltest.Route
	for _, p := range pairs {
		out = append(out, kerneltest.Route{Dst: p[0], Gateway: p[1], Flags: []string{}})
	}
	return out
}

func assertRoutes(t *testing.T, ns *kerneltest.Namespace, want []kerneltest.Route) {
	t.Helper()
	if got := peerRoutes(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("routes on ext0:\n got %+v\nwant %+v", got, want)
	}
}

var (
	p2 = [2]string{"198.18.2.0/24", "192.0.2.2"}
	p3 = [2]string{"198.18.3.0/24", "192.0.2.3"}
)

func TestPeersAddRemoveChange(t *testing.T) {
	ns := node(t)
	b := running(t, ns)
	ctx := context.Background()
	b.HandleEvents(ctx, added(gwLease(p2[0], p2[1]), gwLease(p3[0], p3[1])))
	assertRoutes(t, ns, flannelRoutes(p2, p3))

	b.HandleEvents(ctx, []subnet.Event{{Type: subnet.EventRemoved, Lease: gwLease(p3[0], p3[1])}})
	assertRoutes(t, ns, flannelRoutes(p2))

	updates := ns.SubscribeRoutes(t)
	moved := [2]string{p2[0], "192.0.2.22"}
	b.HandleEvents(ctx, []subnet.Event{{Type: subnet.EventChanged, Lease: gwLease(moved[0], moved[1])}})
	assertRoutes(t, ns, flannelRoutes(moved))
	log := kerneltest.LogOf(t, b.log)
	passes := log.Passes()
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= passes+2 })
	if n := b.PeerErrors(); n != 0 {
		t.Errorf("PeerErrors = %d", n)
	}
}

func TestReconcileRestoresPrunesAndLeavesOthersAlone(t *testing.T) {
	ns := node(t)
	other := kerneltest.NewNamespace(t, "other")
	kerneltest.Veth(t, ns, "other0", "198.51.100.1/24", other, "other0", "198.51.100.2/24")
	b := running(t, ns)
	b.HandleEvents(context.Background(), added(gwLease(p2[0], p2[1]), gwLease(p3[0], p3[1])))

	ns.IP(t, "route", "del", p2[0])
	ns.IP(t, "route", "add", "198.18.7.0/24", "via", "192.0.2.7", "dev", "ext0") // stale, ours
	notOurs := map[string]string{
		"203.0.113.0/24": "via 192.0.2.9 dev ext0",      // outside Network
		"198.18.9.0/24":  "via 198.51.100.9 dev other0", // inside Network, other device
		"198.18.10.0/24": "dev ext0 scope link",         // no gateway
	}
	for dst, spec := range notOurs {
		ns.IP(t, append([]string{"route", "add", dst}, strings.Fields(spec)...)...)
	}
	want := flannelRoutes(p2, p3)
	want = append(want, kerneltest.Route{Dst: "198.18.10.0/24", Flags: []string{}},
		kerneltest.Route{Dst: "203.0.113.0/24", Gateway: "192.0.2.9", Flags: []string{}})
	sort.Slice(want, func(i, j int) bool { return want[i].Dst < want[j].Dst })
	// Two passes after the hand edits: the second one saw them all.
	log := kerneltest.LogOf(t, b.log)
	log.WaitPasses(t, log.Passes()+2)
	if got := peerRoutes(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("after two reconcile passes:\ngot  %+v\nwant %+v", got, want)
	}
	if out := ns.IP(t, "route", "show", "198.18.9.0/24"); !strings.Contains(out, "via 198.51.100.9 dev other0") {
		t.Errorf("route on another device was touched: %q", out)
	}
}

func TestRestartKeepsRoutes(t *testing.T) {
	ns := node(t)
	peers := added(gwLease(p2[0], p2[1]), gwLease(p3[0], p3[1]))
	first := running(t, ns)
	first.HandleEvents(context.Background(), peers)
	assertRoutes(t, ns, flannelRoutes(p2, p3))

	updates := ns.SubscribeRoutes(t)
	// A restarted daemon gets its peer list after Run started and before
	// its first pass, one interval later: a longer interval here leaves a
	// loaded machine room for that.
	second := runningEvery(t, ns, restartInterval)
	log := kerneltest.LogOf(t, second.log)
	log.WaitCount(t, kernel.ReconcileStarted, 1)
	second.HandleEvents(context.Background(), peers)
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= 2 })
	assertRoutes(t, ns, flannelRoutes(p2, p3))
}

func TestRefusesPublicIPNotOnInterface(t *testing.T) {
	ns := node(t)
	ext := ns.External(t, "ext0", "192.0.2.1/24")
	ext.ExtAddr = netip.MustParseAddr("203.0.113.1")
	_, err := New(ext, Options{Network: network, Netlink: ns.NL})
	if err == nil || !strings.Contains(err.Error(), "203.0.113.1") || !strings.Contains(err.Error(), "192.0.2.1") {
		t.Fatalf("New with public IP != iface IP: err = %v, want a refusal naming both", err)
	}
}

func TestOffLinkPeerIsAPerPeerError(t *testing.T) {
	ns := node(t)
	b := running(t, ns)
	b.HandleEvents(context.Background(), added(
		gwLease(p2[0], p2[1]),
		gwLease("198.18.5.0/24", "203.0.113.5"), // not on ext0's link
		gwLease(p3[0], p3[1]),
		subnet.Lease{Subnet: netip.MustParsePrefix("198.18.6.0/24"), // vxlan peer: ignored
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.6"), BackendType: "vxlan"}},
	))
	assertRoutes(t, ns, flannelRoutes(p2, p3))
	if n := b.PeerErrors(); n != 2 {
		t.Errorf("PeerErrors = %d, want 2 (off-link and foreign type)", n)
	}
	// Reconcile passes retry the off-link peer without recounting it.
	log := kerneltest.LogOf(t, b.log)
	log.WaitPasses(t, log.Passes()+2)
	if n := b.PeerErrors(); n != 2 {
		t.Errorf("PeerErrors after reconciles = %d, want still 2", n)
	}
	assertRoutes(t, ns, flannelRoutes(p2, p3))
}

func TestForwardingBetweenPods(t *testing.T) {
	testbed.RequireRoot(t)
	a, b := kerneltest.TwoHosts(t)
	var backends [2]*Backend
	var attrs [2]subnet.LeaseAttrs
	for i, h := range []*kerneltest.Host{a, b} {
		be, err := New(h.External(t, h.Ext, h.Addr.String()), Options{
			Network: network, ReconcileInterval: testInterval, Netlink: h.NL, Logger: kerneltest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if attrs[i], err = be.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := be.Start(context.Background(), subnet.Lease{Subnet: h.Subnet, Attrs: attrs[i]}); err != nil {
			t.Fatal(err)
		}
		backends[i] = be
	}
	backends[0].HandleEvents(context.Background(), added(subnet.Lease{Subnet: b.Subnet, Attrs: attrs[1]}))
	backends[1].HandleEvents(context.Background(), added(subnet.Lease{Subnet: a.Subnet, Attrs: attrs[0]}))
	if out, err := a.Ping(t, b.PodIP); err != nil {
		t.Fatalf("pod ping over host-gw: %v\n%s", err, out)
	}
}
