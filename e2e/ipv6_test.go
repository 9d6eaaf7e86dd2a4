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
	"testing"
	"time"

	"github.com/flannelu/flannelu/iptables"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

var overlay6 = testbed.PodNetworkV6

// TestKernelBackendsIPv6 runs vxlan and host-gw on three hosts with an
// IPv6 underlay, dual stack and IPv6-only, two pods per host: flanneld's
// lease values and subnet.env, ping and ping -6 across the mesh, a TCP
// transfer over IPv6, the IPv6 kernel layout on host 1 entry by entry,
// flanneld's ip6tables rules, the reconcile loop, a hitless restart and a
// peer leaving.
func TestKernelBackendsIPv6(t *testing.T) {
	testbed.RequireRoot(t)
	for _, tc := range []struct {
		backend, name string
		v4            bool
	}{
		{"vxlan", "e2e-vx6", true},
		{"vxlan", "e2e-vx6o", false},
		{"host-gw", "e2e-hg6", true},
		{"host-gw", "e2e-hg6o", false},
	} {
		stack := "dual stack"
		if !tc.v4 {
			stack = "IPv6 only"
		}
		t.Run(tc.backend+"/"+stack, func(t *testing.T) {
			k := newV6Cluster(t, tc.name, tc.backend, tc.v4)
			t.Run("lease values and subnet.env", k.checkLeases)
			t.Run("full mesh ping", func(t *testing.T) {
				if tc.v4 {
					fullMesh(t, allPods(k.c, 1, 2, 3))
				}
				fullMesh(t, v6Pods(k.c, 1, 2, 3))
			})
			t.Run("kernel state on host 1", func(t *testing.T) {
				if err := k.state6(1, 2, 3); err != nil {
					t.Fatal(err)
				}
				if tc.v4 {
					if err := k.v4.state(1, 2, 3); err != nil {
						t.Fatal(err)
					}
				}
				k.checkDevice6(t)
			})
			t.Run("ip6tables rules", k.checkIP6Tables)
			t.Run("32 MB TCP over IPv6 byte for byte", func(t *testing.T) {
				transfer(t, k.c.Bed, v6Pod(k.c.Hosts[0].Pods[0]), v6Pod(k.c.Hosts[1].Pods[1]), 32<<20)
			})
			t.Run("deleted IPv6 entries come back", k.checkRepair6)
			t.Run("restart loses no IPv6 packet", k.checkRestart6)
			t.Run("peer leaves", k.checkLeave6)
		})
	}
}

// v6Cluster is a running three-host cluster of one kernel backend with
// IPv6, and each host's lease as etcd holds it.
type v6Cluster struct {
	c       *testbed.Cluster
	backend string
	dual    bool
	args    []string
	leases  map[int]leaseInfo6
	v4      *kernelCluster // the IPv4 half of a dual-stack cluster, for its checks
}

// leaseInfo6 is one host's lease: its key, value and IPv6 half (the IPv4
// half goes to the kernelCluster's leaseInfo).
type leaseInfo6 struct {
	Key, Value string
	Subnet     netip.Prefix
	Public     netip.Addr
	MAC        string // BackendV6Data's VtepMAC, vxlan only
}

func newV6Cluster(t *testing.T, name, backend string, dual bool) *v6Cluster {
	t.Helper()
	config := fmt.Sprintf(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":%q,"IPv6SubnetLen":64,"Backend":{"Type":%q}}`, overlay6, backend)
	if dual {
		config = fmt.Sprintf(`{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","EnableIPv6":true,"IPv6Network":%q,"IPv6SubnetLen":64,"Backend":{"Type":%q}}`, overlay6, backend)
	}
	c := newClusterOf(t, testbed.Options{Name: name, Hosts: 3, IPv6: true}, config)
	k := &v6Cluster{c: c, backend: backend, dual: dual, leases: map[int]leaseInfo6{},
		args: []string{"--reconcile-interval", reconcileInterval.String(), "--ip-masq", "--iptables-resync", "1"}}
	if dual {
		k.v4 = &kernelCluster{c: c, backend: backend, args: k.args, leases: map[int]leaseInfo{}}
	}
	for i := 1; i <= 3; i++ {
		n := startNode(t, c, i, k.args...)
		if err := n.AddPods(2); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if err := k.readLease(i); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, v6Pod(c.Hosts[0].Pods[0]), c.Hosts[2].Pods[1].Addr6)
	return k
}

// v6Pod is the pod addressed by its IPv6 address, for the helpers that
// reach a pod at its Addr.
func v6Pod(p *testbed.Pod) *testbed.Pod {
	v6 := *p
	v6.Addr = p.Addr6
	return &v6
}

func v6Pods(c *testbed.Cluster, hosts ...int) []*testbed.Pod {
	var pods []*testbed.Pod
	for _, p := range allPods(c, hosts...) {
		pods = append(pods, v6Pod(p))
	}
	return pods
}

// readLease reads host i's lease from etcd under the key flanneld names
// it by (198.18.x.0-24&2001:db8:100:y::-64, or 0.0.0.0-0&... for IPv6
// only), as its subnet.env says.
func (k *v6Cluster) readLease(i int) error {
	env := k.c.Nodes[i].Env
	key := testbed.EtcdPrefix + "/subnets/" + subnet.MakeSubnetKey(env.Subnet.Masked(), env.IPv6Subnet.Masked())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := k.c.Client.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		return fmt.Errorf("host %d: no lease with an etcd lease at %s", i, key)
	}
	value := string(resp.Kvs[0].Value)
	var v struct {
		PublicIP, PublicIPv6       string
		BackendData, BackendV6Data struct{ VtepMAC string }
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return fmt.Errorf("host %d: lease %s: %w: %s", i, key, err, value)
	}
	l := leaseInfo6{Key: key, Value: value, Subnet: env.IPv6Subnet.Masked(), MAC: v.BackendV6Data.VtepMAC}
	if l.Public, err = netip.ParseAddr(v.PublicIPv6); err != nil {
		return fmt.Errorf("host %d: lease %s: PublicIPv6: %w", i, key, err)
	}
	k.leases[i] = l
	if k.dual {
		l4 := leaseInfo{Key: key, Value: value, Subnet: env.Subnet.Masked(), MAC: v.BackendData.VtepMAC}
		if l4.Public, err = netip.ParseAddr(v.PublicIP); err != nil {
			return fmt.Errorf("host %d: lease %s: PublicIP: %w", i, key, err)
		}
		k.v4.leases[i] = l4
	}
	return nil
}

// checkLeases compares every lease value with flanneld's bytes (the
// VtepMACs being the devices' MACs) and subnet.env with flanneld's text.
func (k *v6Cluster) checkLeases(t *testing.T) {
	for i := 1; i <= 3; i++ {
		h, l, n := k.c.Hosts[i-1], k.leases[i], k.c.Nodes[i]
		public := `"PublicIP":"0.0.0.0"`
		if k.dual {
			public = fmt.Sprintf(`"PublicIP":%q`, h.Addr)
		}
		data := ""
		if k.backend == "vxlan" {
			mac6, err := linkMAC(h, "flannel-v6.1")
			if err != nil {
				t.Fatal(err)
			}
			data = fmt.Sprintf(`,"BackendV6Data":{"VNI":1,"VtepMAC":%q}`, mac6)
			if k.dual {
				mac4, err := linkMAC(h, "flannel.1")
				if err != nil {
					t.Fatal(err)
				}
				data = fmt.Sprintf(`,"BackendData":{"VNI":1,"VtepMAC":%q}`, mac4) + data
			}
		}
		want := fmt.Sprintf(`{%s,"PublicIPv6":%q,"BackendType":%q%s}`, public, h.Addr6, k.backend, data)
		if l.Value != want {
			t.Errorf("host %d: lease %s =\n  %s\nwant flanneld's\n  %s", i, l.Key, l.Value, want)
		}
		mtu := map[string]int{"vxlan": 1450, "host-gw": 1500}[k.backend]
		if k.backend == "vxlan" && !k.dual {
			mtu = 1430 // the IPv6 device's, so that IPv6-only pods never need packet-too-big
		}
		wantEnv := fmt.Sprintf("FLANNEL_IPV6_NETWORK=2001:db8:100::/48\nFLANNEL_IPV6_SUBNET=%s/64\nFLANNEL_MTU=%d\nFLANNEL_IPMASQ=true\n", l.Subnet.Addr().Next(), mtu)
		if k.dual {
			wantEnv = fmt.Sprintf("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=%s/24\n", n.Env.Subnet.Masked().Addr().Next()) + wantEnv
		}
		if env, err := os.ReadFile(n.SubnetFile); err != nil || string(env) != wantEnv {
			t.Errorf("host %d: %s:\n%s\nwant flanneld's:\n%s (%v)", i, n.SubnetFile, env, wantEnv, err)
		}
	}
}

func linkMAC(h *testbed.Host, dev string) (string, error) {
	var links []struct{ Address string }
	if err := ipJSON(h, &links, "ip", "-j", "link", "show", dev); err != nil {
		return "", err
	}
	if len(links) != 1 {
		return "", fmt.Errorf("%s: %d links named %s", h.Name, len(links), dev)
	}
	return links[0].Address, nil
}

// state6 compares host on's IPv6 kernel state with exactly what flanneld
// programs for the given peers: routes into 2001:db8:100::/48 (vxlan:
// `<subnet> via <subnet address> dev flannel-v6.1 onlink`; host-gw:
// `<subnet> via <PublicIPv6> dev eth0`), and for vxlan the permanent
// neighbours and the fdb entries of flannel-v6.1.
func (k *v6Cluster) state6(on int, peers ...int) error {
	h := k.c.Hosts[on-1]
	var errs []error
	want := map[string]string{}
	for _, p := range peers {
		l := k.leases[p]
		if k.backend == "vxlan" {
			want[l.Subnet.String()] = fmt.Sprintf("via %s dev flannel-v6.1 onlink", l.Subnet.Addr())
		} else {
			want[l.Subnet.String()] = fmt.Sprintf("via %s dev eth0", l.Public)
		}
	}
	var routes []struct {
		Dst, Gateway, Dev, Protocol string
		Flags                       []string
	}
	if err := ipJSON(h, &routes, "ip", "-6", "-j", "route"); err != nil {
		return err
	}
	for _, r := range routes {
		dst, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			dst, err = netip.ParsePrefix(r.Dst + "/128") // ip prints a host route without its length
		}
		if err != nil || !overlay6.Overlaps(dst) || r.Protocol == "kernel" {
			continue // not the overlay's, or the kernel's own (cni0's subnet, flannel-v6.1's address)
		}
		got := fmt.Sprintf("via %s dev %s", r.Gateway, r.Dev)
		if slices.Contains(r.Flags, "onlink") {
			got += " onlink"
		}
		if w, ok := want[r.Dst]; !ok || got != w {
			errs = append(errs, fmt.Errorf("host %d: IPv6 route %s %s, want %q", on, r.Dst, got, w))
		}
		delete(want, r.Dst)
	}
	for dst, w := range want {
		errs = append(errs, fmt.Errorf("host %d: missing IPv6 route %s %s", on, dst, w))
	}
	if k.backend == "vxlan" {
		errs = append(errs, k.vxlanState6(h, on, peers))
	}
	return errors.Join(errs...)
}

func (k *v6Cluster) vxlanState6(h *testbed.Host, on int, peers []int) error {
	var errs []error
	wantNeigh, wantFDB := map[string]string{}, map[string]bool{}
	for _, p := range peers {
		l := k.leases[p]
		wantNeigh[l.Subnet.Addr().String()] = l.MAC
		wantFDB[l.MAC+" dst "+l.Public.String()] = true
	}
	var neighs []struct {
		Dst, Lladdr string
		State       []string
	}
	if err := ipJSON(h, &neighs, "ip", "-6", "-j", "neigh", "show", "dev", "flannel-v6.1"); err != nil {
		return err
	}
	for _, n := range neighs {
		if !slices.Contains(n.State, "PERMANENT") {
			continue // the kernel's own resolutions
		}
		if mac, ok := wantNeigh[n.Dst]; !ok || mac != n.Lladdr {
			errs = append(errs, fmt.Errorf("host %d: neighbour %s lladdr %s PERMANENT on flannel-v6.1, want lladdr %q", on, n.Dst, n.Lladdr, mac))
		}
		delete(wantNeigh, n.Dst)
	}
	for ip, mac := range wantNeigh {
		errs = append(errs, fmt.Errorf("host %d: missing neighbour %s lladdr %s PERMANENT on flannel-v6.1", on, ip, mac))
	}
	var fdb []struct{ Mac, Dst, State string }
	if err := ipJSON(h, &fdb, "bridge", "-j", "fdb", "show", "dev", "flannel-v6.1"); err != nil {
		return err
	}
	for _, f := range fdb {
		key := f.Mac + " dst " + f.Dst
		if !wantFDB[key] || f.State != "permanent" {
			errs = append(errs, fmt.Errorf("host %d: unexpected fdb entry %s state %q on flannel-v6.1", on, key, f.State))
		}
		delete(wantFDB, key)
	}
	for key := range wantFDB {
		errs = append(errs, fmt.Errorf("host %d: missing fdb entry %s on flannel-v6.1", on, key))
	}
	return errors.Join(errs...)
}

// checkDevice6 reads host 1's flannel-v6.1 back (vxlan): flanneld's
// device over the IPv6 underlay with the lease's address /128; host-gw
// must make no device. flannel.1 exists exactly in dual stack.
func (k *v6Cluster) checkDevice6(t *testing.T) {
	h := k.c.Hosts[0]
	_, err4 := h.Run("ip", "link", "show", "flannel.1")
	if k.backend != "vxlan" || !k.dual {
		if err4 == nil {
			t.Errorf("%s (dual stack %v) created flannel.1", k.backend, k.dual)
		}
	} else if err4 != nil {
		t.Error("dual-stack vxlan has no flannel.1")
	}
	_, err6 := h.Run("ip", "link", "show", "flannel-v6.1")
	if k.backend != "vxlan" {
		if err6 == nil {
			t.Error("host-gw created flannel-v6.1")
		}
		return
	}
	var links []struct {
		Flags    []string
		MTU      int
		Address  string
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
			InfoData struct {
				ID       int
				Local6   string // iproute2's name for an IPv6 local address
				Link     string
				Port     int
				Learning bool
			} `json:"info_data"`
		}
	}
	if err := ipJSON(h, &links, "ip", "-j", "-d", "link", "show", "flannel-v6.1"); err != nil || len(links) != 1 {
		t.Fatalf("flannel-v6.1: %v %+v", err, links)
	}
	l, d := links[0], links[0].Linkinfo.InfoData
	got := fmt.Sprintf("%s id %d dstport %d local %s dev %s learning=%v mtu %d up=%v mac %s",
		l.Linkinfo.InfoKind, d.ID, d.Port, d.Local6, d.Link, d.Learning, l.MTU, slices.Contains(l.Flags, "UP"), l.Address)
	want := fmt.Sprintf("vxlan id 1 dstport 8472 local %s dev eth0 learning=false mtu 1430 up=true mac %s", h.Addr6, k.leases[1].MAC)
	if got != want {
		t.Errorf("flannel-v6.1: %s\nwant:         %s", got, want)
	}
	out := h.MustRun("ip", "-6", "-o", "addr", "show", "dev", "flannel-v6.1", "scope", "global")
	if want := "inet6 " + k.leases[1].Subnet.Addr().String() + "/128 "; strings.Count(out, "inet6 ") != 1 || !strings.Contains(out, want) {
		t.Errorf("flannel-v6.1 global addresses:\n%s\nwant only %q", out, want)
	}
}

// checkIP6Tables compares host 1's ip6tables chains with flanneld's
// IPv6 rules for its lease, exactly and in order.
func (k *v6Cluster) checkIP6Tables(t *testing.T) {
	h, own := k.c.Hosts[0], k.leases[1].Subnet
	for _, s := range []iptables.Set{iptables.Masq(overlay6, own, true), iptables.Forward(overlay6)} {
		want := []string{"-N " + s.Chain}
		jump := ""
		for _, r := range s.Rules {
			if r.Chain == s.Chain {
				want = append(want, r.String())
			} else {
				jump = "-A" + strings.TrimPrefix(r.String(), "-I")
			}
		}
		err := testbed.Eventually(10*time.Second, func() error {
			out, err := h.Run("ip6tables", "-t", s.Table, "-S", s.Chain)
			if got := strings.Split(strings.TrimSpace(out), "\n"); err != nil || !slices.Equal(got, want) {
				return fmt.Errorf("ip6tables -t %s -S %s: %v\n%s\nwant:\n%s", s.Table, s.Chain, err, out, strings.Join(want, "\n"))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		builtin := strings.Fields(jump)[1]
		if out := h.MustRun("ip6tables", "-t", s.Table, "-S", builtin); !strings.Contains(out, "-P "+builtin+" ACCEPT\n"+jump+"\n") {
			t.Errorf("ip6tables -t %s -S %s: the jump is not first:\n%s\nwant first: %s", s.Table, builtin, out, jump)
		}
	}
	if out, err := h.Run("iptables", "-t", "nat", "-S", iptables.MasqChain); k.dual != (err == nil) {
		t.Errorf("iptables masquerade chain present %v in dual stack %v:\n%s", err == nil, k.dual, out)
	}
}

// deletePeerEntries6 removes by hand host 1's IPv6 entries for peer p:
// its route, and for vxlan its fdb entry and neighbour.
func (k *v6Cluster) deletePeerEntries6(t *testing.T, p int) {
	t.Helper()
	h, l := k.c.Hosts[0], k.leases[p]
	cmds := [][]string{{"ip", "-6", "route", "del", l.Subnet.String()}}
	if k.backend == "vxlan" {
		cmds = append(cmds,
			[]string{"bridge", "fdb", "del", l.MAC, "dev", "flannel-v6.1", "dst", l.Public.String()},
			[]string{"ip", "-6", "neigh", "del", l.Subnet.Addr().String(), "dev", "flannel-v6.1"})
	}
	for _, cmd := range cmds {
		if out, err := h.Run(cmd...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

func (k *v6Cluster) checkRepair6(t *testing.T) {
	k.deletePeerEntries6(t, 2)
	start := time.Now()
	if err := testbed.Eventually(repairDeadline, func() error { return k.state6(1, 2, 3) }); err != nil {
		t.Fatalf("IPv6 entries not restored within %v (reconcile interval %v):\n%v", repairDeadline, reconcileInterval, err)
	}
	t.Logf("peer 2's IPv6 entries restored after %v", time.Since(start).Round(10*time.Millisecond))
	if out, err := testbed.Ping(k.c.Hosts[0].Pods[0].NS, k.c.Hosts[1].Pods[0].Addr6.String(), 3); err != nil {
		t.Fatalf("ping -6 after repair: %v\n%s", err, out)
	}
}

// deletedEntry6 matches ip monitor's report of a deleted IPv6 overlay
// route or a deleted neighbour or fdb entry of flannel-v6.1.
var deletedEntry6 = regexp.MustCompile(`(?m)^Deleted (2001:db8:100:.*|.* dev flannel-v6\.1 .*)$`)

// checkRestart6 restarts host 1's flannelu (SIGTERM, start) during 500
// pings -6 at 10 ms from a pod of host 1 to a pod of host 2: no loss, the
// same subnets and lease value, no IPv6 entry deleted meanwhile.
func (k *v6Cluster) checkRestart6(t *testing.T) {
	c, h1 := k.c, k.c.Hosts[0]
	old := c.Nodes[1]
	mon, err := c.Start(h1.NS, "ip-monitor6-"+k.backend, "ip", "-6", "monitor", "route", "neigh")
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Stop()
	marker := []string{"-6", "route", "add", "2001:db8:0:1:8000::/65", "dev", "eth0", "table", "100"}
	if err := testbed.Eventually(5*time.Second, func() error {
		h1.Run(append([]string{"ip", "-6", "route", "del"}, marker[3:]...)...) //nolint:errcheck // absent the first time
		h1.MustRun(append([]string{"ip"}, marker...)...)
		if b, _ := os.ReadFile(mon.Log); !strings.Contains(string(b), "2001:db8:0:1:8000::/65") {
			return errors.New("ip monitor not attached yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const count = 500
	ping, err := c.Start(h1.Pods[0].NS, "ping6-restart-"+k.backend, "ping", "-6", "-n", "-q", "-i", "0.01", "-c", fmt.Sprint(count), "-W", "1", c.Hosts[1].Pods[1].Addr6.String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the stream run before the restart: part of the scenario, not an assertion
	if err := old.Stop(); err != nil {
		t.Fatalf("flannelu on host 1 did not stop cleanly: %v%s", err, testbed.Tail(old.Proc.Log, 10))
	}
	n, err := c.StartNode(1, k.args...)
	if err != nil {
		t.Fatal(err)
	}
	if ping.Exited() {
		t.Fatal("the ping stream ended before flannelu was back: the restart was not under traffic")
	}
	if exited, _ := ping.Wait(20 * time.Second); !exited {
		t.Fatal("ping did not finish")
	}
	out, _ := os.ReadFile(ping.Log)
	if summary := fmt.Sprintf("%d packets transmitted, %d received, 0%% packet loss", count, count); !strings.Contains(string(out), summary) {
		t.Errorf("ping -6 across the restart: want %q, got:\n%s", summary, out)
	}
	if n.Env.Subnet != old.Env.Subnet || n.Env.IPv6Subnet != old.Env.IPv6Subnet {
		t.Errorf("restarted host 1 got %v %v, had %v %v", n.Env.Subnet, n.Env.IPv6Subnet, old.Env.Subnet, old.Env.IPv6Subnet)
	}
	before := k.leases[1]
	if err := k.readLease(1); err != nil {
		t.Fatal(err)
	}
	if k.leases[1].Value != before.Value {
		t.Errorf("lease value changed across the restart:\n  %s\n  %s", before.Value, k.leases[1].Value)
	}
	if err := testbed.Eventually(repairDeadline, func() error { return k.state6(1, 2, 3) }); err != nil {
		t.Error(err)
	}
	b, _ := os.ReadFile(mon.Log)
	for _, m := range deletedEntry6.FindAllString(string(b), -1) {
		t.Errorf("deleted during the restart: %s", m)
	}
}

// checkLeave6 stops host 3's flannelu and deletes its lease: hosts 1 and 2
// remove all of host 3's IPv6 entries and keep each other's.
func (k *v6Cluster) checkLeave6(t *testing.T) {
	if err := k.c.Nodes[3].Stop(); err != nil {
		t.Fatalf("flannelu on host 3: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := k.c.Client.Delete(ctx, k.leases[3].Key); err != nil || resp.Deleted != 1 {
		t.Fatalf("delete %s: %v", k.leases[3].Key, err)
	}
	for _, hp := range [][2]int{{1, 2}, {2, 1}} {
		if err := testbed.Eventually(repairDeadline, func() error { return k.state6(hp[0], hp[1]) }); err != nil {
			t.Errorf("after host 3 left:\n%v", err)
		}
		if k.dual {
			if err := testbed.Eventually(repairDeadline, func() error { return k.v4.state(hp[0], hp[1]) }); err != nil {
				t.Errorf("after host 3 left (IPv4):\n%v", err)
			}
		}
	}
	fullMesh(t, v6Pods(k.c, 1, 2))
}
