package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// reconcileInterval is what the kernel e2e tests run flannelu with. A
// repair must be seen after two reconcile passes (the node's debug log
// shows each one); waits for an event end at eventDeadline, which only a
// failing test reaches.
const (
	reconcileInterval = 500 * time.Millisecond
	eventDeadline     = 30 * time.Second
)

var overlay = netip.MustParsePrefix("198.18.0.0/16")

// TestKernelBackends runs the vxlan and host-gw backends on three hosts
// with two pods each, on an IPv4 network, a dual-stack one and an
// IPv6-only one (over an IPv6 underlay): traffic of every family,
// flanneld's lease values and kernel layout on host 1, the reconcile loop,
// a hitless restart, a foreign lease, and a peer leaving.
func TestKernelBackends(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	for _, tc := range []struct{ backend, name, foreign, foreignData string }{
		// The foreign lease has the other kernel type: a mixed cluster
		// half-way through a backend change.
		{"vxlan", "e2e-vx", "host-gw", ""},
		{"host-gw", "e2e-hg", "vxlan", `,"BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}`},
	} {
		for _, st := range []stack{ipv4, dualStack, ipv6Only} {
			t.Run(tc.backend+"/"+st.String(), func(t *testing.T) {
				t.Parallel()
				k := newKernelCluster(t, tc.name+st.suffix(), tc.backend, st)
				t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, k.pods(1, 2, 3)) })
				t.Run("lease values", k.checkLeaseValues)
				t.Run("kernel state on host 1", func(t *testing.T) {
					if err := k.state(1, 2, 3); err != nil {
						t.Fatal(err)
					}
					k.checkDevice(t)
				})
				if st.v6 {
					t.Run("ip6tables rules", k.checkIP6Tables)
				}
				if st.v4 {
					t.Run("100 MB TCP byte for byte", func(t *testing.T) {
						transfer(t, k.c.Bed, k.c.Hosts[0].Pods[0], k.c.Hosts[1].Pods[1], 100<<20)
					})
				}
				if st.v6 {
					t.Run("32 MB TCP over IPv6 byte for byte", func(t *testing.T) {
						transfer(t, k.c.Bed, v6Pod(k.c.Hosts[0].Pods[0]), v6Pod(k.c.Hosts[1].Pods[1]), 32<<20)
					})
				}
				t.Run("deleted entries come back", k.checkRepair)
				t.Run("restart loses no packet", func(t *testing.T) { k.checkRestart(t, false) })
				if st == ipv4 {
					t.Run("hand-over loses no packet", func(t *testing.T) { k.checkRestart(t, true) })
				}
				if st == ipv4 {
					t.Run("foreign backend type ignored", func(t *testing.T) { k.checkForeign(t, tc.foreign, tc.foreignData) })
					t.Run("metrics", k.checkMetrics)
				}
				t.Run("peer leaves", k.checkLeave)
			})
		}
	}
}

// kernelCluster is a running three-host cluster of one kernel backend and
// what the test learned about each host's lease.
type kernelCluster struct {
	c       *testbed.Cluster
	backend string
	stack
	args   []string
	leases map[int]leaseInfo // by host index
}

// leaseInfo is one host's lease as etcd holds it: the key, the value, and
// each family's subnet, public address and (vxlan) VtepMAC.
type leaseInfo struct {
	Key    string
	Value  string
	Subnet netip.Prefix
	Public netip.Addr
	MAC    string // VtepMAC, vxlan only

	Subnet6 netip.Prefix
	Public6 netip.Addr
	MAC6    string // BackendV6Data's VtepMAC, vxlan only
}

func newKernelCluster(t *testing.T, name, backend string, st stack) *kernelCluster {
	t.Helper()
	k := &kernelCluster{
		c:       newClusterOf(t, testbed.Options{Name: name, Hosts: 3, IPv6: st.v6}, st.config(backend)),
		backend: backend,
		stack:   st,
		args:    []string{"--reconcile-interval", reconcileInterval.String(), "--log-level", "debug"},
		leases:  map[int]leaseInfo{},
	}
	if st.v6 {
		k.args = append(k.args, "--ip-masq", "--iptables-resync", "1")
	}
	for i := 1; i <= 3; i++ {
		n := startNode(t, k.c, i, k.args...)
		// IPv6 pods come from the real CNI chain (flannel's plugin puts
		// both of subnet.env's subnets in host-local's ranges); IPv4 ones
		// by hand, as before (TestCNIChain covers the chain for IPv4).
		addPods := n.AddPods
		if st.v6 {
			addPods = n.AddCNIPods
		}
		if err := addPods(2); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		l, err := k.readLease(i)
		if err != nil {
			t.Fatal(err)
		}
		k.leases[i] = l
	}
	waitPing(t, k.c.Hosts[0].Pods[0], k.c.Hosts[2].Pods[1].Addr)
	return k
}

// pods lists the pods of the given hosts once per family of the network,
// each addressed by that family's address.
func (k *kernelCluster) pods(hosts ...int) []*testbed.Pod {
	var pods []*testbed.Pod
	if k.v4 {
		pods = allPods(k.c, hosts...)
	}
	if k.v6 {
		for _, p := range allPods(k.c, hosts...) {
			pods = append(pods, v6Pod(p))
		}
	}
	return pods
}

func leaseKey(sn netip.Prefix) string {
	return testbed.EtcdPrefix + "/subnets/" + strings.ReplaceAll(sn.Masked().String(), "/", "-")
}

// readLease reads host i's lease from etcd, under the key its subnet.env
// names in flanneld's form (198.18.x.0-24, with &2001:db8:100:y::-64 in
// dual stack, 0.0.0.0-0&2001:db8:100:y::-64 for IPv6 only).
func (k *kernelCluster) readLease(i int) (leaseInfo, error) {
	env := k.c.Nodes[i].Env
	sn, sn6 := env.Subnet.Masked(), env.IPv6Subnet.Masked()
	l := leaseInfo{Key: testbed.EtcdPrefix + "/subnets/" + subnet.MakeSubnetKey(sn, sn6), Subnet: sn, Subnet6: sn6}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := k.c.Client.Get(ctx, l.Key)
	if err != nil {
		return l, err
	}
	if len(resp.Kvs) != 1 {
		return l, fmt.Errorf("host %d: no lease %s in etcd", i, l.Key)
	}
	if resp.Kvs[0].Lease == 0 {
		return l, fmt.Errorf("host %d: key %s has no etcd lease attached", i, l.Key)
	}
	l.Value = string(resp.Kvs[0].Value)
	var v struct {
		PublicIP, PublicIPv6       string
		BackendData, BackendV6Data struct{ VtepMAC string }
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return l, fmt.Errorf("host %d: lease %s: %w: %s", i, l.Key, err, l.Value)
	}
	if l.Public, err = netip.ParseAddr(v.PublicIP); err != nil {
		return l, fmt.Errorf("host %d: lease %s: %w", i, l.Key, err)
	}
	if k.v6 {
		if l.Public6, err = netip.ParseAddr(v.PublicIPv6); err != nil {
			return l, fmt.Errorf("host %d: lease %s: PublicIPv6: %w", i, l.Key, err)
		}
	}
	l.MAC, l.MAC6 = v.BackendData.VtepMAC, v.BackendV6Data.VtepMAC
	return l, nil
}

// checkLeaseValues compares every lease with flanneld's bytes (for vxlan
// the VtepMACs are the MACs of the host's flannel.1 and flannel-v6.1) and
// every subnet.env with flanneld's text.
func (k *kernelCluster) checkLeaseValues(t *testing.T) {
	for i := 1; i <= 3; i++ {
		l, h, n := k.leases[i], k.c.Hosts[i-1], k.c.Nodes[i]
		public, public6, data := `"PublicIP":"0.0.0.0"`, `"PublicIPv6":null`, ""
		if k.v4 {
			public = fmt.Sprintf(`"PublicIP":%q`, h.Addr)
		}
		if k.v6 {
			public6 = fmt.Sprintf(`"PublicIPv6":%q`, h.Addr6)
		}
		for _, f := range k.devices() {
			mac, err := linkMAC(h, f.dev)
			if err != nil {
				t.Fatal(err)
			}
			data += fmt.Sprintf(`,%q:{"VNI":1,"VtepMAC":%q}`, f.dataField, mac)
		}
		want := fmt.Sprintf(`{%s,%s,"BackendType":%q%s}`, public, public6, k.backend, data)
		if l.Value != want {
			t.Errorf("host %d: lease %s =\n  %s\nwant flanneld's\n  %s", i, l.Key, l.Value, want)
		}
		if env, err := os.ReadFile(n.SubnetFile); err != nil || string(env) != k.wantEnv(l) {
			t.Errorf("host %d: %s:\n%s\nwant flanneld's:\n%s (%v)", i, n.SubnetFile, env, k.wantEnv(l), err)
		}
	}
}

// wantEnv is flanneld's subnet.env for lease l, with flannelu's MTU: the
// external MTU (host-gw), minus 50 (vxlan), minus 70 for IPv6-only vxlan
// (flannel-v6.<VNI>'s MTU, so that IPv6-only pods never need
// packet-too-big; flanneld writes minus 50 there too).
func (k *kernelCluster) wantEnv(l leaseInfo) string {
	mtu := 1500
	if k.backend == "vxlan" {
		mtu = map[bool]int{true: 1450, false: 1430}[k.v4]
	}
	var env string
	if k.v4 {
		env += fmt.Sprintf("FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s/%d\n", overlay, l.Subnet.Addr().Next(), l.Subnet.Bits())
	}
	if k.v6 {
		env += fmt.Sprintf("FLANNEL_IPV6_NETWORK=%s\nFLANNEL_IPV6_SUBNET=%s/%d\n", overlay6, l.Subnet6.Addr().Next(), l.Subnet6.Bits())
	}
	return env + fmt.Sprintf("FLANNEL_MTU=%d\nFLANNEL_IPMASQ=%t\n", mtu, k.v6) // the IPv6 clusters run with --ip-masq
}

// runner is a host or a pod: a namespace that runs commands.
type runner interface {
	Run(...string) (string, error)
}

// ipJSON runs one of iproute2's -j commands in a host or a pod and decodes
// it.
func ipJSON(h runner, v any, args ...string) error {
	out, err := h.Run(args...)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		out = "[]" // some versions print nothing for an empty dump
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// state compares host on's kernel state with exactly what flannel
// programs for the given peers (host indexes), in every family of the
// network: every expected entry is present with the right attributes and
// no other overlay entry is.
func (k *kernelCluster) state(on int, peers ...int) error {
	var errs []error
	for _, f := range k.families() {
		errs = append(errs, k.familyState(f, on, peers))
	}
	return errors.Join(errs...)
}

// family is one address family's view of the cluster for the checks:
// the ip flag, the overlay, flanneld's VXLAN device (its name, MTU over a
// 1500 underlay and the lease field of its MAC), a host's underlay
// address, and each lease's subnet, public address and VtepMAC of that
// family.
type family struct {
	flag      string
	overlay   netip.Prefix
	dev       string
	mtu       int
	dataField string
	local     func(*testbed.Host) netip.Addr
	subnet    func(leaseInfo) netip.Prefix
	public    func(leaseInfo) netip.Addr
	mac       func(leaseInfo) string
}

var (
	family4 = family{"-4", overlay, "flannel.1", 1450, "BackendData", func(h *testbed.Host) netip.Addr { return h.Addr },
		func(l leaseInfo) netip.Prefix { return l.Subnet }, func(l leaseInfo) netip.Addr { return l.Public },
		func(l leaseInfo) string { return l.MAC }}
	family6 = family{"-6", overlay6, "flannel-v6.1", 1430, "BackendV6Data", func(h *testbed.Host) netip.Addr { return h.Addr6 },
		func(l leaseInfo) netip.Prefix { return l.Subnet6 }, func(l leaseInfo) netip.Addr { return l.Public6 },
		func(l leaseInfo) string { return l.MAC6 }}
)

// families are the address families of the cluster's network.
func (k *kernelCluster) families() []family {
	var fs []family
	if k.v4 {
		fs = append(fs, family4)
	}
	if k.v6 {
		fs = append(fs, family6)
	}
	return fs
}

// familyState is state for one family: routes into its overlay (vxlan:
// `<subnet> via <subnet address> dev <device> onlink`; host-gw: `<subnet>
// via <public address> dev eth0`) and, for vxlan, the device's permanent
// neighbours and fdb entries.
func (k *kernelCluster) familyState(f family, on int, peers []int) error {
	h := k.c.Hosts[on-1]
	var errs []error
	wantRoutes := map[string]string{}
	for _, p := range peers {
		l := k.leases[p]
		if k.backend == "vxlan" {
			wantRoutes[f.subnet(l).String()] = fmt.Sprintf("via %s dev %s onlink", f.subnet(l).Addr(), f.dev)
		} else {
			wantRoutes[f.subnet(l).String()] = fmt.Sprintf("via %s dev eth0", f.public(l))
		}
	}
	var routes []struct {
		Dst, Gateway, Dev, Protocol string
		Flags                       []string
	}
	if err := ipJSON(h, &routes, "ip", f.flag, "-j", "route"); err != nil {
		return err
	}
	for _, r := range routes {
		dst, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			dst, err = netip.ParsePrefix(r.Dst + fmt.Sprintf("/%d", f.overlay.Addr().BitLen())) // a host route, printed without its length
		}
		if err != nil || !f.overlay.Overlaps(dst) || r.Protocol == "kernel" {
			continue // not the overlay's, or the kernel's own (cni0's subnet, flannel-v6.1's address)
		}
		got := fmt.Sprintf("via %s dev %s", r.Gateway, r.Dev)
		if slices.Contains(r.Flags, "onlink") {
			got += " onlink"
		}
		if want, ok := wantRoutes[r.Dst]; !ok || got != want {
			errs = append(errs, fmt.Errorf("host %d: route %s %s, want %q", on, r.Dst, got, want))
		}
		delete(wantRoutes, r.Dst)
	}
	for dst, want := range wantRoutes {
		errs = append(errs, fmt.Errorf("host %d: missing route %s %s", on, dst, want))
	}
	if k.backend == "vxlan" {
		errs = append(errs, k.vxlanState(f, h, on, peers))
	}
	return errors.Join(errs...)
}

func (k *kernelCluster) vxlanState(f family, h *testbed.Host, on int, peers []int) error {
	var errs []error
	wantNeigh, wantFDB := map[string]string{}, map[string]string{}
	for _, p := range peers {
		l := k.leases[p]
		wantNeigh[f.subnet(l).Addr().String()] = f.mac(l)
		wantFDB[f.mac(l)+" dst "+f.public(l).String()] = "permanent"
	}
	var neighs []struct {
		Dst, Lladdr string
		State       []string
	}
	if err := ipJSON(h, &neighs, "ip", f.flag, "-j", "neigh", "show", "dev", f.dev); err != nil {
		return err
	}
	for _, n := range neighs {
		if !slices.Contains(n.State, "PERMANENT") {
			continue // the kernel's own resolutions, not flannelu's
		}
		if mac, ok := wantNeigh[n.Dst]; !ok || mac != n.Lladdr {
			errs = append(errs, fmt.Errorf("host %d: neighbour %s lladdr %s PERMANENT on %s, want lladdr %q", on, n.Dst, n.Lladdr, f.dev, mac))
		}
		delete(wantNeigh, n.Dst)
	}
	for ip, mac := range wantNeigh {
		errs = append(errs, fmt.Errorf("host %d: missing neighbour %s lladdr %s PERMANENT on %s", on, ip, mac, f.dev))
	}
	var fdb []struct {
		Mac, Dst, State string
		Flags           []string
	}
	if err := ipJSON(h, &fdb, "bridge", "-j", "fdb", "show", "dev", f.dev); err != nil {
		return err
	}
	for _, e := range fdb {
		key := e.Mac + " dst " + e.Dst
		if _, ok := wantFDB[key]; !ok || e.State != "permanent" {
			errs = append(errs, fmt.Errorf("host %d: unexpected fdb entry %s state %q flags %v on %s", on, key, e.State, e.Flags, f.dev))
		}
		delete(wantFDB, key)
	}
	for key := range wantFDB {
		errs = append(errs, fmt.Errorf("host %d: missing fdb entry %s on %s", on, key, f.dev))
	}
	return errors.Join(errs...)
}

// checkDevice reads host 1's vxlan devices back (flannel.1 exactly with an
// IPv4 network, flannel-v6.1 exactly with an IPv6 one), or checks that
// host-gw made none.
func (k *kernelCluster) checkDevice(t *testing.T) {
	h := k.c.Hosts[0]
	want := map[string]bool{}
	for _, f := range k.devices() {
		want[f.dev] = true
		k.checkVxlanDevice(t, h, f)
	}
	for _, f := range []family{family4, family6} {
		if out, err := h.Run("ip", "link", "show", f.dev); err == nil && !want[f.dev] {
			t.Errorf("%s (%s) created %s:\n%s", k.backend, k.stack, f.dev, out)
		}
	}
}

// devices are the families whose VXLAN device the cluster's hosts must
// have.
func (k *kernelCluster) devices() []family {
	if k.backend != "vxlan" {
		return nil
	}
	return k.families()
}

// checkVxlanDevice compares f's device on h with flanneld's: VNI 1, port
// 8472, learning off, over eth0's address of the family, the kernel's MTU
// over that underlay, up, the lease's VtepMAC, and exactly the lease's
// network address as a host prefix among the family's global addresses.
func (k *kernelCluster) checkVxlanDevice(t *testing.T, h *testbed.Host, f family) {
	t.Helper()
	var links []struct {
		Flags    []string
		MTU      int
		Address  string
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
			InfoData struct {
				ID       int
				Local    string
				Local6   string // iproute2's name for an IPv6 local address
				Link     string
				Port     int
				Learning bool
			} `json:"info_data"`
		}
	}
	if err := ipJSON(h, &links, "ip", "-j", "-d", "link", "show", f.dev); err != nil || len(links) != 1 {
		t.Fatalf("%s: %v %+v", f.dev, err, links)
	}
	l, d := links[0], links[0].Linkinfo.InfoData
	got := fmt.Sprintf("%s id %d dstport %d local %s dev %s learning=%v mtu %d up=%v mac %s",
		l.Linkinfo.InfoKind, d.ID, d.Port, d.Local+d.Local6, d.Link, d.Learning, l.MTU, slices.Contains(l.Flags, "UP"), l.Address)
	want := fmt.Sprintf("vxlan id 1 dstport 8472 local %s dev eth0 learning=false mtu %d up=true mac %s", f.local(h), f.mtu, f.mac(k.leases[1]))
	if got != want {
		t.Errorf("%s: %s\nwant: %s", f.dev, got, want)
	}
	sn := f.subnet(k.leases[1])
	out := h.MustRun("ip", f.flag, "-o", "addr", "show", "dev", f.dev, "scope", "global")
	if addr := fmt.Sprintf(" %s/%d ", sn.Addr(), sn.Addr().BitLen()); strings.Count(out, "\n") != 1 || !strings.Contains(out, addr) {
		t.Errorf("%s global addresses:\n%s\nwant only%s", f.dev, out, addr)
	}
}

// deletePeerEntries removes by hand host 1's entries for peer p (2 or 3)
// in every family: its route, and for vxlan its fdb entry and neighbour.
func (k *kernelCluster) deletePeerEntries(t *testing.T, p int) {
	t.Helper()
	h, l := k.c.Hosts[0], k.leases[p]
	var cmds [][]string
	for _, f := range k.families() {
		cmds = append(cmds, []string{"ip", f.flag, "route", "del", f.subnet(l).String()})
		if k.backend == "vxlan" {
			cmds = append(cmds,
				[]string{"bridge", "fdb", "del", f.mac(l), "dev", f.dev, "dst", f.public(l).String()},
				[]string{"ip", f.flag, "neigh", "del", f.subnet(l).Addr().String(), "dev", f.dev})
		}
	}
	// Each delete fails unless the entry was there: no read-back, which
	// could race with a reconcile pass that already restored it.
	for _, cmd := range cmds {
		if out, err := h.Run(cmd...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

// checkRepair deletes a peer's entries by hand; the reconcile loop must
// put them back within two intervals (plus slack), and traffic flows.
func (k *kernelCluster) checkRepair(t *testing.T) {
	peers := []int{2, 3}
	k.deletePeerEntries(t, 2)
	start := time.Now()
	k.waitPasses(t, 1, 2)
	if err := k.state(1, peers...); err != nil {
		t.Fatalf("entries not restored by two reconcile passes:\n%v", err)
	}
	t.Logf("peer 2's entries restored within two passes, %v (reconcile interval %v)", time.Since(start).Round(10*time.Millisecond), reconcileInterval)
	for _, to := range k.pods(2) {
		if out, err := testbed.Ping(k.c.Hosts[0].Pods[0].NS, to.Addr.String(), 3); err != nil {
			t.Fatalf("ping after repair: %v\n%s", err, out)
		}
	}
}

// deletedEntry matches ip monitor's report of a deleted route into either
// overlay or a deleted neighbour or fdb entry of flannel.1 or flannel-v6.1.
var deletedEntry = regexp.MustCompile(`(?m)^Deleted (198\.18\.\d+\.\d+/\d+ .*|2001:db8:100:.*|.* dev flannel(-v6)?\.1 .*)$`)

// markerDeleted is ip monitor's line for checkRestart's marker route.
var markerDeleted = regexp.MustCompile(`(?m)^Deleted 192\.0\.2\.128/25 `)

// checkRestart SIGTERMs host 1's flannelu during a 100 pings/s stream
// from a pod of host 1 to a pod of host 2 and starts it again (or, with
// handOver, starts a second one, which has the first leave): same subnet,
// same lease value, no peer route (nor, for vxlan, neighbour or fdb
// entry) deleted meanwhile, no packet lost.
func (k *kernelCluster) checkRestart(t *testing.T, handOver bool) {
	c, h1 := k.c, k.c.Hosts[0]
	old := c.Nodes[1]
	mon, err := c.Start(h1.NS, "ip-monitor-"+k.backend, "ip", "monitor", "route", "neigh")
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Stop()
	// A marker route, added until the monitor reports it, proves the
	// monitor is attached before the restart.
	marker := []string{"192.0.2.128/25", "dev", "eth0", "table", "100"}
	defer h1.Run(append([]string{"ip", "route", "del"}, marker...)...) //nolint:errcheck // the namespace goes anyway
	if err := testbed.Eventually(eventDeadline, func() error {
		h1.Run(append([]string{"ip", "route", "del"}, marker...)...) //nolint:errcheck // absent the first time
		h1.MustRun(append([]string{"ip", "route", "add"}, marker...)...)
		if b, _ := os.ReadFile(mon.Log); !strings.Contains(string(b), "192.0.2.128/25") {
			return errors.New("ip monitor route not attached yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A stream of 100 requests/s with no count: it runs until the test has
	// seen the restart through, so its length is set by events, not by a
	// guess at how long a restart takes on a loaded machine.
	// With IPv6 the stream is IPv6: the IPv4 network has the same test.
	to := c.Hosts[1].Pods[1].Addr.String()
	if k.v6 {
		to = c.Hosts[1].Pods[1].Addr6.String()
	}
	ping, err := c.Start(h1.Pods[0].NS, "ping-restart-"+k.backend, "ping", "-n", "-i", "0.01", to)
	if err != nil {
		t.Fatal(err)
	}
	defer ping.Stop()
	// 100 replies (about 1 s of stream) before the restart: part of the
	// scenario, not an assertion.
	if err := waitAnswered(ping, 100); err != nil {
		t.Fatal(err)
	}
	restartStart := time.Now()
	n, passesBefore, err := k.restart(handOver)
	if err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(restartStart)
	if ping.Exited() {
		t.Fatalf("the ping stream ended during the restart:%s", testbed.Tail(ping.Log, 5))
	}
	// 100 more replies after flannelu is back, then every request up to
	// the last of them must have been answered.
	b, _ := os.ReadFile(ping.Log)
	last := lastAnswered(b) + 100
	if err := waitAnswered(ping, last); err != nil {
		t.Fatal(err)
	}
	ping.Signal(syscall.SIGINT)
	ping.Wait(10 * time.Second)
	b, _ = os.ReadFile(ping.Log)
	answered := testbed.PingReplies(b)
	var lost []int
	for seq := 1; seq <= last; seq++ {
		if !answered[seq] {
			lost = append(lost, seq)
		}
	}
	if len(lost) > 0 {
		t.Errorf("ping across the restart: %d of requests 1..%d not answered: %v", len(lost), last, lost)
	} else {
		t.Logf("restart took %v under pings at 10 ms: requests 1..%d all answered", restarted.Round(time.Millisecond), last)
	}

	if n.Env.Subnet != old.Env.Subnet || n.Env.IPv6Subnet != old.Env.IPv6Subnet || n.SubnetFile != old.SubnetFile {
		t.Errorf("restarted host 1 got subnets %v %v in %s, had %v %v in %s", n.Env.Subnet, n.Env.IPv6Subnet, n.SubnetFile,
			old.Env.Subnet, old.Env.IPv6Subnet, old.SubnetFile)
	}
	l, err := k.readLease(1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Value != k.leases[1].Value {
		t.Errorf("lease value changed across the restart:\n  %s\n  %s", k.leases[1].Value, l.Value)
	}
	// The new process must have finished its first reconcile with the
	// entries intact: wait for it and read the state again.
	k.waitPassesSince(t, 1, passesBefore, 1)
	if err := k.state(1, 2, 3); err != nil {
		t.Error(err)
	}
	// The marker's deletion, once the monitor reports it, shows that it
	// has written everything before.
	// (The attach loop above may have logged some deletions of it too.)
	b, _ = os.ReadFile(mon.Log)
	seen := len(markerDeleted.FindAll(b, -1))
	h1.MustRun(append([]string{"ip", "route", "del"}, marker...)...)
	if err := mon.WaitOutput(eventDeadline, "the marker route's deletion", func(log []byte) bool {
		return len(markerDeleted.FindAll(log, -1)) > seen
	}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(mon.Log)
	for _, m := range deletedEntry.FindAllString(string(b), -1) {
		t.Errorf("deleted during the restart: %s", m)
	}
}

// restart replaces host 1's flannelu: stopped and started again, or with
// handOver a second one started beside it, which has the first leave. It
// returns the new node and the reconcile passes the old process logged.
func (k *kernelCluster) restart(handOver bool) (n *testbed.Node, passesBefore int, err error) {
	old := k.c.Nodes[1]
	if !handOver {
		if err := old.Stop(); err != nil {
			return nil, 0, fmt.Errorf("flannelu on host 1 did not stop cleanly on SIGTERM: %w%s", err, testbed.Tail(old.Proc.Log, 10))
		}
		passesBefore = k.passes(1) // the old process's, all of them: it has exited
		n, err = k.c.StartNode(1, k.args...)
		return n, passesBefore, err
	}
	if n, err = k.c.LaunchNode(1, k.args...); err != nil {
		return nil, 0, err
	}
	if err := waitLeft(old.Proc); err != nil {
		return nil, 0, err
	}
	passesBefore = k.passes(1) // both processes log there: counted once the old one is gone
	return n, passesBefore, n.WaitEnv(eventDeadline)
}

// reconciled is flannelu's debug line for a finished reconcile pass.
var reconciled = regexp.MustCompile(`(?m)^.*msg=` + regexp.QuoteMeta(kernel.Reconciled) + `( |$)`)

// passes counts the reconcile passes in host i's flannelu log.
func (k *kernelCluster) passes(i int) int {
	b, _ := os.ReadFile(k.c.Nodes[i].Proc.Log)
	return len(reconciled.FindAll(b, -1))
}

// waitPasses waits until host i's flannelu has finished n reconcile
// passes after the call: the first may have been half-way through when
// the caller changed the state, the second saw the whole change.
func (k *kernelCluster) waitPasses(t *testing.T, i, n int) {
	t.Helper()
	k.waitPassesSince(t, i, k.passes(i), n)
}

// waitPassesSince waits until host i's log shows n passes more than from.
func (k *kernelCluster) waitPassesSince(t *testing.T, i, from, n int) {
	t.Helper()
	p := k.c.Nodes[i].Proc
	err := p.WaitOutput(eventDeadline, fmt.Sprintf("%d reconcile passes after the first %d", n, from),
		func(log []byte) bool { return len(reconciled.FindAll(log, -1)) >= from+n })
	if err != nil {
		t.Fatal(err)
	}
}

// waitAnswered waits until a ping stream (without -q) shows the reply to
// request seq or a later one.
func waitAnswered(ping *testbed.Proc, seq int) error {
	return ping.WaitOutput(30*time.Second, fmt.Sprintf("a reply to request %d", seq),
		func(log []byte) bool { return lastAnswered(log) >= seq })
}

// lastAnswered is the highest request number a ping output shows answered.
func lastAnswered(log []byte) int {
	last := 0
	for seq := range testbed.PingReplies(log) {
		last = max(last, seq)
	}
	return last
}

// checkForeign writes a lease of another backend type for an unused
// subnet: every host logs a warning and programs nothing for it, while
// reconciling everything else as before.
func (k *kernelCluster) checkForeign(t *testing.T, typ, data string) {
	sn := netip.MustParsePrefix("198.18.250.0/24")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	grant, err := k.c.Client.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	value := fmt.Sprintf(`{"PublicIP":"192.0.2.9","PublicIPv6":null,"BackendType":%q%s}`, typ, data)
	if _, err := k.c.Client.Put(ctx, leaseKey(sn), value, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	defer k.c.Client.Revoke(context.Background(), grant.ID) //nolint:errcheck // best effort, the cluster goes anyway
	warning := regexp.MustCompile(`level=WARN msg="ignoring peer lease".* subnet=198\.18\.250\.0/24 type=` + regexp.QuoteMeta(typ))
	for i := 1; i <= 3; i++ {
		n := k.c.Nodes[i]
		if err := testbed.Eventually(eventDeadline, func() error {
			if b, _ := os.ReadFile(n.Proc.Log); !warning.Match(b) {
				return fmt.Errorf("host %d logged no warning like %q:%s", i, warning, testbed.Tail(n.Proc.Log, 5))
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	// A reconcile pass after the event (proved by a repair) must leave
	// exactly the real peers' entries: nothing for 198.18.250.0/24.
	k.deletePeerEntries(t, 3)
	k.waitPasses(t, 1, 2)
	if err := k.state(1, 2, 3); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"ip", "route", "show", "match", "198.18.250.1"}, {"ip", "neigh", "show", "to", "198.18.250.0"}} {
		if out := k.c.Hosts[0].MustRun(args...); strings.Contains(out, "198.18.250.") || strings.Contains(out, "192.0.2.9") {
			t.Errorf("%v: entry for the foreign lease:\n%s", args, out)
		}
	}
}

// checkLeave stops host 3's flannelu and deletes its lease, as an
// operator removing a node does: hosts 1 and 2 remove all of host 3's
// entries and keep each other's.
func (k *kernelCluster) checkLeave(t *testing.T) {
	n3 := k.c.Nodes[3]
	if err := n3.Stop(); err != nil {
		t.Fatalf("flannelu on host 3: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := k.c.Client.Delete(ctx, k.leases[3].Key)
	if err != nil {
		t.Fatalf("delete %s: %v", k.leases[3].Key, err)
	}
	if resp.Deleted != 1 {
		t.Fatalf("delete %s: deleted %d keys, want 1", k.leases[3].Key, resp.Deleted)
	}
	start := time.Now()
	for _, hp := range [][2]int{{1, 2}, {2, 1}} {
		if err := testbed.Eventually(eventDeadline, func() error { return k.state(hp[0], hp[1]) }); err != nil {
			t.Errorf("after host 3 left:\n%v", err)
		}
	}
	t.Logf("host 3's entries gone from hosts 1 and 2 after %v", time.Since(start).Round(10*time.Millisecond))
	fullMesh(t, k.pods(1, 2))
}
