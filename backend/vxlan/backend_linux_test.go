package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
	"github.com/flannelu/flannelu/testbed/kerneltest"
)

const testInterval = 200 * time.Millisecond

// restartInterval is the restart test's reconcile interval: the time a
// loaded machine has to deliver the peer list before the first pass.
const restartInterval = time.Second

var network = netip.MustParsePrefix("198.18.0.0/16")

// node is a namespace with an external veth ext0 at 192.0.2.1/24.
func node(t testing.TB) *kerneltest.Namespace {
	t.Helper()
	testbed.RequireRoot(t)
	ns := kerneltest.NewNamespace(t, "vx")
	far := kerneltest.NewNamespace(t, "far")
	kerneltest.Veth(t, ns, "ext0", "192.0.2.1/24", far, "ext0", "192.0.2.99/24")
	return ns
}

// running creates, initialises, starts and runs a backend; Run is stopped
// (and must return nil) in t.Cleanup.
func running(t *testing.T, ns *kerneltest.Namespace, cfg string, own netip.Prefix) (*Backend, subnet.LeaseAttrs) {
	t.Helper()
	return runningEvery(t, ns, cfg, own, testInterval)
}

// runningEvery is running with another reconcile interval.
func runningEvery(t *testing.T, ns *kerneltest.Namespace, cfg string, own netip.Prefix, interval time.Duration) (*Backend, subnet.LeaseAttrs) {
	t.Helper()
	b, attrs := startedEvery(t, ns, cfg, own, interval)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
	return b, attrs
}

func started(t *testing.T, ns *kerneltest.Namespace, cfg string, own netip.Prefix) (*Backend, subnet.LeaseAttrs) {
	t.Helper()
	return startedEvery(t, ns, cfg, own, testInterval)
}

func startedEvery(t *testing.T, ns *kerneltest.Namespace, cfg string, own netip.Prefix, interval time.Duration) (*Backend, subnet.LeaseAttrs) {
	t.Helper()
	b, err := New(ns.External(t, "ext0", "192.0.2.1/24"), Options{
		Network: network, BackendJSON: []byte(cfg), ReconcileInterval: interval,
		Logger: kerneltest.Logger(t), Netlink: ns.NL,
	})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := b.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), subnet.Lease{Subnet: own, Attrs: attrs}); err != nil {
		t.Fatal(err)
	}
	return b, attrs
}

func vxLease(sn, public, mac string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(public), BackendType: "vxlan",
		BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac)),
	}}
}

func ev(typ subnet.EventType, l subnet.Lease) []subnet.Event {
	return []subnet.Event{{Type: typ, Lease: l}}
}

// layout is what `ip route`, `ip neigh` and `bridge fdb` show for flannel.1.
type layout struct {
	Routes []kerneltest.Route
	Neighs []kerneltest.Neigh
	FDB    []kerneltest.FDB
}

func readLayout(t *testing.T, ns *kerneltest.Namespace) layout {
	t.Helper()
	var l layout
	ns.JSON(t, &l.Routes, "ip", "route", "show", "dev", "flannel.1")
	ns.JSON(t, &l.Neighs, "ip", "neigh", "show", "dev", "flannel.1")
	ns.JSON(t, &l.FDB, "bridge", "fdb", "show", "dev", "flannel.1")
	sort.Slice(l.Routes, func(i, j int) bool { return l.Routes[i].Dst < l.Routes[j].Dst })
	sort.Slice(l.Neighs, func(i, j int) bool { return l.Neighs[i].Dst < l.Neighs[j].Dst })
	sort.Slice(l.FDB, func(i, j int) bool { return l.FDB[i].MAC < l.FDB[j].MAC })
	return l
}

// flannelLayout is flanneld's layout for the given peers, sorted by subnet.
func flannelLayout(peers ...[3]string) layout {
	l := layout{Routes: []kerneltest.Route{}, Neighs: []kerneltest.Neigh{}, FDB: []kerneltest.FDB{}}
	for _, p := range peers { // {subnet, public, mac}
		ip := netip.MustParsePrefix(p[0]).Addr().String()
		l.Routes = append(l.Routes, kerneltest.Route{Dst: p[0], Gateway: ip, Flags: []string{"onlink"}})
		l.Neighs = append(l.Neighs, kerneltest.Neigh{Dst: ip, LLAddr: p[2], State: []string{"PERMANENT"}})
		l.FDB = append(l.FDB, kerneltest.FDB{MAC: p[2], Dst: p[1], Flags: []string{"self"}, State: "permanent"})
	}
	sort.Slice(l.FDB, func(i, j int) bool { return l.FDB[i].MAC < l.FDB[j].MAC })
	return l
}

func assertLayout(t *testing.T, ns *kerneltest.Namespace, want layout) {
	t.Helper()
	if got := readLayout(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("kernel state on flannel.1:\n got %+v\nwant %+v", got, want)
	}
}

// TestBackendMTUIsTheUnderlays: Backend.MTU is the underlay MTU, as
// flanneld v0.28 reads it: flannel.1 and the pods get MTU - 50.
func TestBackendMTUIsTheUnderlays(t *testing.T) {
	ns := node(t)
	b, _ := running(t, ns, `{"Type":"vxlan","MTU":1400}`, own1)
	var links []struct {
		MTU int `json:"mtu"`
	}
	ns.JSON(t, &links, "ip", "link", "show", "flannel.1")
	if len(links) != 1 || links[0].MTU != 1350 || b.MTU() != 1350 {
		t.Fatalf("flannel.1 %+v, subnet.env MTU %d; want both 1400-50", links, b.MTU())
	}
}

var (
	peer2 = [3]string{"198.18.2.0/24", "192.0.2.2", "02:00:5e:00:02:02"}
	peer3 = [3]string{"198.18.3.0/24", "203.0.113.3", "02:00:5e:00:03:03"}
	own1  = netip.MustParsePrefix("198.18.1.0/24")
)

func TestInitDeviceAndLeaseAttrs(t *testing.T) {
	ns := node(t)
	_, attrs := running(t, ns, `{"Type":"vxlan"}`, own1)

	var links []struct {
		Name     string   `json:"ifname"`
		MTU      int      `json:"mtu"`
		Address  string   `json:"address"`
		Flags    []string `json:"flags"`
		LinkInfo struct {
			Kind string `json:"info_kind"`
			Data struct {
				ID       int    `json:"id"`
				Local    string `json:"local"`
				Link     string `json:"link"`
				Port     int    `json:"port"`
				Learning bool   `json:"learning"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	ns.JSON(t, &links, "ip", "-d", "link", "show", "flannel.1")
	if len(links) != 1 {
		t.Fatalf("flannel.1: %+v", links)
	}
	l := links[0]
	d := l.LinkInfo.Data
	if l.LinkInfo.Kind != "vxlan" || d.ID != 1 || d.Local != "192.0.2.1" || d.Link != "ext0" || d.Port != 8472 || d.Learning {
		t.Errorf("device = %+v, want vxlan id 1 local 192.0.2.1 dev ext0 dstport 8472 nolearning", l)
	}
	if l.MTU != 1450 {
		t.Errorf("MTU %d, want 1500-50", l.MTU)
	}
	if want := fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, l.Address); string(attrs.BackendData) != want {
		t.Errorf("BackendData %s, want %s", attrs.BackendData, want)
	}
	if attrs.PublicIP != netip.MustParseAddr("192.0.2.1") || attrs.BackendType != "vxlan" {
		t.Errorf("attrs %+v", attrs)
	}
	if out := ns.IP(t, "-4", "-o", "addr", "show", "dev", "flannel.1"); !strings.Contains(out, "inet 198.18.1.0/32") {
		t.Errorf("flannel.1 address: %s", out)
	}
}

func TestPeersAddRemoveChange(t *testing.T) {
	ns := node(t)
	b, _ := running(t, ns, `{"Type":"vxlan"}`, own1)
	ctx := context.Background()

	b.HandleEvents(ctx, append(ev(subnet.EventAdded, vxLease(peer2[0], peer2[1], peer2[2])),
		ev(subnet.EventAdded, vxLease(peer3[0], peer3[1], peer3[2]))...))
	assertLayout(t, ns, flannelLayout(peer2, peer3))

	b.HandleEvents(ctx, ev(subnet.EventRemoved, vxLease(peer3[0], peer3[1], peer3[2])))
	assertLayout(t, ns, flannelLayout(peer2))

	// Changed: new public IP and MAC. The route must be kept, never deleted.
	updates := ns.SubscribeRoutes(t)
	moved := [3]string{peer2[0], "198.51.100.2", "02:00:5e:00:02:99"}
	b.HandleEvents(ctx, ev(subnet.EventChanged, vxLease(moved[0], moved[1], moved[2])))
	assertLayout(t, ns, flannelLayout(moved))
	log := kerneltest.LogOf(t, b.log)
	passes := log.Passes()
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= passes+2 })
	if n := b.PeerErrors(); n != 0 {
		t.Errorf("PeerErrors = %d", n)
	}
}

func TestReconcileRestoresAndPrunes(t *testing.T) {
	ns := node(t)
	b, _ := running(t, ns, `{"Type":"vxlan"}`, own1)
	b.HandleEvents(context.Background(), append(ev(subnet.EventAdded, vxLease(peer2[0], peer2[1], peer2[2])),
		ev(subnet.EventAdded, vxLease(peer3[0], peer3[1], peer3[2]))...))
	want := flannelLayout(peer2, peer3)

	// Entries deleted by hand come back; stale entries on flannel.1 go;
	// routes that are not ours stay.
	ns.IP(t, "route", "del", "198.18.2.0/24", "dev", "flannel.1")
	ns.IP(t, "neigh", "del", "198.18.3.0", "dev", "flannel.1")
	kerneltest.Run(t, "bridge", "-n", ns.Name, "fdb", "del", peer2[2], "dev", "flannel.1", "dst", peer2[1])
	ns.IP(t, "route", "add", "198.18.7.0/24", "via", "198.18.7.0", "dev", "flannel.1", "onlink")
	ns.IP(t, "neigh", "add", "198.18.7.0", "lladdr", "02:00:5e:00:07:07", "dev", "flannel.1", "nud", "permanent")
	kerneltest.Run(t, "bridge", "-n", ns.Name, "fdb", "add", "02:00:5e:00:07:07", "dev", "flannel.1", "dst", "192.0.2.7", "self", "permanent")
	ns.IP(t, "route", "add", "198.18.8.0/24", "via", "192.0.2.8", "dev", "ext0")  // inside Network, other device
	ns.IP(t, "route", "add", "203.0.113.0/24", "via", "192.0.2.9", "dev", "ext0") // outside Network

	// Two passes after the hand edits: the second one saw them all.
	log := kerneltest.LogOf(t, b.log)
	log.WaitPasses(t, log.Passes()+2)
	if got := readLayout(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("after two reconcile passes:\ngot  %+v\nwant %+v", got, want)
	}
	for _, dst := range []string{"198.18.8.0/24", "203.0.113.0/24"} {
		if out := ns.IP(t, "route", "show", dst); out == "" {
			t.Errorf("route %s we do not own was removed", dst)
		}
	}
}

func TestRestartKeepsEntries(t *testing.T) {
	ns := node(t)
	peers := append(ev(subnet.EventAdded, vxLease(peer2[0], peer2[1], peer2[2])),
		ev(subnet.EventAdded, vxLease(peer3[0], peer3[1], peer3[2]))...)

	first, attrs1 := started(t, ns, `{"Type":"vxlan"}`, own1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	first.HandleEvents(context.Background(), peers)
	firstLog := kerneltest.LogOf(t, first.log)
	firstLog.WaitPasses(t, 2) // the running daemon reconciles with its peers in place
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertLayout(t, ns, flannelLayout(peer2, peer3)) // left in place on return

	updates := ns.SubscribeRoutes(t)
	// The restarted daemon's peer list arrives after Run started and
	// before its first pass, one interval later: a longer interval here
	// leaves a loaded machine room for that.
	second, attrs2 := runningEvery(t, ns, `{"Type":"vxlan"}`, own1, restartInterval)
	if string(attrs1.BackendData) != string(attrs2.BackendData) {
		t.Errorf("VtepMAC changed on restart: %s -> %s", attrs1.BackendData, attrs2.BackendData)
	}
	log := kerneltest.LogOf(t, second.log)
	log.WaitCount(t, kernel.ReconcileStarted, 1)
	second.HandleEvents(context.Background(), peers)
	ns.NoRouteDeleted(t, updates, func() bool { return log.Passes() >= 2 })
	assertLayout(t, ns, flannelLayout(peer2, peer3))
}

func TestIncompatibleDeviceIsRecreated(t *testing.T) {
	ns := node(t)
	ns.IP(t, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "ext0", "dstport", "4789")
	started(t, ns, `{"Type":"vxlan"}`, own1)
	link, err := ns.NL.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if vx := link.(*netlink.Vxlan); vx.Port != 8472 || vx.SrcAddr.String() != "192.0.2.1" {
		t.Errorf("device not recreated: port %d local %v", vx.Port, vx.SrcAddr)
	}
}

func TestForeignAndMalformedLeasesIgnored(t *testing.T) {
	ns := node(t)
	b, _ := running(t, ns, `{"Type":"vxlan"}`, own1)
	hostgw := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.4"), BackendType: "host-gw"}}
	bad := vxLease("198.18.5.0/24", "192.0.2.5", "not-a-mac")
	b.HandleEvents(context.Background(), []subnet.Event{
		{Type: subnet.EventAdded, Lease: hostgw}, {Type: subnet.EventAdded, Lease: bad},
		{Type: subnet.EventAdded, Lease: vxLease(peer2[0], peer2[1], peer2[2])},
	})
	assertLayout(t, ns, flannelLayout(peer2))
	if n := b.PeerErrors(); n != 2 {
		t.Errorf("PeerErrors = %d, want 2", n)
	}
}

// CheckLeaseData is the rule the daemon's Validator applies to each write:
// the probe's bad VtepMACs are refused there, before the backend sees them.
func TestCheckLeaseData(t *testing.T) {
	ns := node(t)
	b, _ := running(t, ns, `{"Type":"vxlan"}`, own1)
	withData := func(data string) subnet.Lease {
		l := vxLease(peer2[0], peer2[1], peer2[2])
		l.Attrs.BackendData = []byte(data)
		return l
	}
	if err := b.CheckLeaseData(vxLease(peer2[0], peer2[1], peer2[2])); err != nil {
		t.Fatalf("valid lease: %v", err)
	}
	for _, data := range []string{`{"VNI":1,"VtepMAC":"zz:zz:zz"}`, `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`,
		`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`, `{"VNI":1}`, `[1,2]`, ``, `null`, `{"VNI":1,"VtepMAC":"02:00:5e:00:00:01:02:03"}`} {
		if err := b.CheckLeaseData(withData(data)); err == nil {
			t.Errorf("BackendData %s accepted", data)
		}
	}
	hostgw := withData(`[1,2]`)
	hostgw.Attrs.BackendType = "host-gw"
	if err := b.CheckLeaseData(hostgw); err != nil {
		t.Errorf("a host-gw lease's data is not vxlan's business: %v", err)
	}
}

func TestDirectRouting(t *testing.T) {
	ns := node(t)
	b, _ := running(t, ns, `{"Type":"vxlan","DirectRouting":true}`, own1)
	b.HandleEvents(context.Background(), append(ev(subnet.EventAdded, vxLease(peer2[0], peer2[1], peer2[2])),
		ev(subnet.EventAdded, vxLease(peer3[0], peer3[1], peer3[2]))...))
	assertLayout(t, ns, flannelLayout(peer3)) // 203.0.113.3 is off-link: vxlan
	if out := ns.IP(t, "route", "show", "198.18.2.0/24"); !strings.Contains(out, "via 192.0.2.2 dev ext0") {
		t.Errorf("direct route for on-link peer: %q", out)
	}
	// A hand-deleted direct route returns too.
	ns.IP(t, "route", "del", "198.18.2.0/24")
	log := kerneltest.LogOf(t, b.log)
	log.WaitPasses(t, log.Passes()+2)
	if out := ns.IP(t, "route", "show", "198.18.2.0/24"); !strings.Contains(out, "via 192.0.2.2 dev ext0") {
		t.Fatalf("direct route not restored by two reconcile passes: %q", out)
	}
}

func TestForwardingBetweenPods(t *testing.T) {
	testbed.RequireRoot(t)
	a, b := kerneltest.TwoHosts(t)
	var attrs [2]subnet.LeaseAttrs
	var backends [2]*Backend
	for i, h := range []*kerneltest.Host{a, b} {
		be, err := New(h.External(t, h.Ext, h.Addr.String()), Options{
			Network: network, ReconcileInterval: testInterval, Netlink: h.NL,
			Logger: kerneltest.Logger(t),
		})
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
	backends[0].HandleEvents(context.Background(), ev(subnet.EventAdded, subnet.Lease{Subnet: b.Subnet, Attrs: attrs[1]}))
	backends[1].HandleEvents(context.Background(), ev(subnet.EventAdded, subnet.Lease{Subnet: a.Subnet, Attrs: attrs[0]}))
	if out, err := a.Ping(t, b.PodIP); err != nil {
		t.Fatalf("pod ping over vxlan: %v\n%s", err, out)
	}
}
