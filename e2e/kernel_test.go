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
// with two pods each: traffic, flannel's kernel layout on host 1, the
// reconcile loop, a hitless restart, a foreign lease, and a peer leaving.
func TestKernelBackends(t *testing.T) {
	testbed.RequireRoot(t)
	for _, tc := range []struct{ backend, name, foreign, foreignData string }{
		// The foreign lease has the other kernel type: a mixed cluster
		// half-way through a backend change.
		{"vxlan", "e2e-vx", "host-gw", ""},
		{"host-gw", "e2e-hg", "vxlan", `,"BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}`},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			k := newKernelCluster(t, tc.name, tc.backend)
			t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, allPods(k.c, 1, 2, 3)) })
			t.Run("lease values", k.checkLeaseValues)
			t.Run("kernel state on host 1", func(t *testing.T) {
				if err := k.state(1, 2, 3); err != nil {
					t.Fatal(err)
				}
				k.checkDevice(t)
			})
			t.Run("100 MB TCP byte for byte", func(t *testing.T) {
				transfer(t, k.c.Bed, k.c.Hosts[0].Pods[0], k.c.Hosts[1].Pods[1], 100<<20)
			})
			t.Run("deleted entries come back", k.checkRepair)
			t.Run("restart loses no packet", k.checkRestart)
			t.Run("foreign backend type ignored", func(t *testing.T) { k.checkForeign(t, tc.foreign, tc.foreignData) })
			t.Run("metrics", k.checkMetrics)
			t.Run("peer leaves", k.checkLeave)
		})
	}
}

// kernelCluster is a running three-host cluster of one kernel backend and
// what the test learned about each host's lease.
type kernelCluster struct {
	c       *testbed.Cluster
	backend string
	args    []string
	leases  map[int]leaseInfo // by host index
}

// leaseInfo is one host's lease as etcd holds it.
type leaseInfo struct {
	Key    string
	Value  string
	Subnet netip.Prefix
	Public netip.Addr
	MAC    string // VtepMAC, vxlan only
}

func newKernelCluster(t *testing.T, name, backend string) *kernelCluster {
	t.Helper()
	// Leases stay at or below 198.18.200.0/24 (as udpConfig), so checkForeign's
	// 198.18.250.0/24 is never a real host's.
	config := fmt.Sprintf(`{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","Backend":{"Type":%q}}`, backend)
	k := &kernelCluster{
		c:       newCluster(t, name, 3, config),
		backend: backend,
		args:    []string{"--reconcile-interval", reconcileInterval.String(), "--log-level", "debug"},
		leases:  map[int]leaseInfo{},
	}
	for i := 1; i <= 3; i++ {
		n := startNode(t, k.c, i, k.args...)
		if err := n.AddPods(2); err != nil {
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

func leaseKey(sn netip.Prefix) string {
	return testbed.EtcdPrefix + "/subnets/" + strings.ReplaceAll(sn.Masked().String(), "/", "-")
}

// readLease reads host i's lease from etcd, under the key its subnet.env
// names.
func (k *kernelCluster) readLease(i int) (leaseInfo, error) {
	sn := k.c.Nodes[i].Env.Subnet.Masked()
	l := leaseInfo{Key: leaseKey(sn), Subnet: sn}
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
		PublicIP    string
		BackendData struct{ VtepMAC string }
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return l, fmt.Errorf("host %d: lease %s: %w: %s", i, l.Key, err, l.Value)
	}
	if l.Public, err = netip.ParseAddr(v.PublicIP); err != nil {
		return l, fmt.Errorf("host %d: lease %s: %w", i, l.Key, err)
	}
	l.MAC = v.BackendData.VtepMAC
	return l, nil
}

// checkLeaseValues compares every lease with flanneld's bytes; for vxlan
// the VtepMAC must be the MAC of the host's flannel.1.
func (k *kernelCluster) checkLeaseValues(t *testing.T) {
	for i := 1; i <= 3; i++ {
		l, h := k.leases[i], k.c.Hosts[i-1]
		if l.Public != h.Addr {
			t.Errorf("host %d: lease PublicIP %v, want its eth0 address %v", i, l.Public, h.Addr)
		}
		want := fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"host-gw"}`, h.Addr)
		if k.backend == "vxlan" {
			mac, err := deviceMAC(h)
			if err != nil {
				t.Fatal(err)
			}
			want = fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, h.Addr, mac)
		}
		if l.Value != want {
			t.Errorf("host %d: lease %s =\n  %s\nwant flanneld's\n  %s", i, l.Key, l.Value, want)
		}
		wantMTU := 1500
		if k.backend == "vxlan" {
			wantMTU = 1450
		}
		if env := k.c.Nodes[i].Env; env.MTU != wantMTU || env.Network != overlay {
			t.Errorf("host %d: subnet.env FLANNEL_NETWORK=%v FLANNEL_MTU=%d, want %v and %d", i, env.Network, env.MTU, overlay, wantMTU)
		}
	}
}

func deviceMAC(h *testbed.Host) (string, error) {
	var links []struct{ Address string }
	if err := ipJSON(h, &links, "ip", "-j", "link", "show", "flannel.1"); err != nil {
		return "", err
	}
	if len(links) != 1 {
		return "", fmt.Errorf("%s: %d links named flannel.1", h.Name, len(links))
	}
	return links[0].Address, nil
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

// netIP is a lease's network address: flannel's vxlan gateway for it.
func netIP(l leaseInfo) string { return l.Subnet.Addr().String() }

// state compares host on's kernel state with exactly what flannel
// programs for the given peers (host indexes): every expected entry is
// present with the right attributes and no other overlay entry is.
func (k *kernelCluster) state(on int, peers ...int) error {
	h := k.c.Hosts[on-1]
	var errs []error
	wantRoutes := map[string]string{}
	for _, p := range peers {
		l := k.leases[p]
		if k.backend == "vxlan" {
			wantRoutes[l.Subnet.String()] = fmt.Sprintf("via %s dev flannel.1 onlink", netIP(l))
		} else {
			wantRoutes[l.Subnet.String()] = fmt.Sprintf("via %s dev eth0", l.Public)
		}
	}
	var routes []struct {
		Dst, Gateway, Dev, Protocol string
		Flags                       []string
	}
	if err := ipJSON(h, &routes, "ip", "-j", "route"); err != nil {
		return err
	}
	own := k.leases[on].Subnet.String()
	for _, r := range routes {
		dst, err := netip.ParsePrefix(r.Dst)
		if err != nil || !overlay.Overlaps(dst) {
			continue
		}
		if r.Dst == own && r.Dev == "cni0" && r.Protocol == "kernel" {
			continue // the pods' bridge, not flannelu's
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
		errs = append(errs, k.vxlanState(h, on, peers))
	}
	return errors.Join(errs...)
}

func (k *kernelCluster) vxlanState(h *testbed.Host, on int, peers []int) error {
	var errs []error
	wantNeigh, wantFDB := map[string]string{}, map[string]string{}
	for _, p := range peers {
		l := k.leases[p]
		wantNeigh[netIP(l)] = l.MAC
		wantFDB[l.MAC+" dst "+l.Public.String()] = "permanent"
	}
	var neighs []struct {
		Dst, Lladdr string
		State       []string
	}
	if err := ipJSON(h, &neighs, "ip", "-j", "neigh", "show", "dev", "flannel.1"); err != nil {
		return err
	}
	for _, n := range neighs {
		if !slices.Contains(n.State, "PERMANENT") {
			continue // the kernel's own resolutions, not flannelu's
		}
		if mac, ok := wantNeigh[n.Dst]; !ok || mac != n.Lladdr {
			errs = append(errs, fmt.Errorf("host %d: neighbour %s lladdr %s PERMANENT, want lladdr %q", on, n.Dst, n.Lladdr, mac))
		}
		delete(wantNeigh, n.Dst)
	}
	for ip, mac := range wantNeigh {
		errs = append(errs, fmt.Errorf("host %d: missing neighbour %s lladdr %s PERMANENT on flannel.1", on, ip, mac))
	}
	var fdb []struct {
		Mac, Dst, State string
		Flags           []string
	}
	if err := ipJSON(h, &fdb, "bridge", "-j", "fdb", "show", "dev", "flannel.1"); err != nil {
		return err
	}
	for _, f := range fdb {
		key := f.Mac + " dst " + f.Dst
		if _, ok := wantFDB[key]; !ok || f.State != "permanent" {
			errs = append(errs, fmt.Errorf("host %d: unexpected fdb entry %s state %q flags %v", on, key, f.State, f.Flags))
		}
		delete(wantFDB, key)
	}
	for key := range wantFDB {
		errs = append(errs, fmt.Errorf("host %d: missing fdb entry %s on flannel.1", on, key))
	}
	return errors.Join(errs...)
}

// checkDevice reads host 1's flannel.1 back (vxlan), or checks that
// host-gw made no device.
func (k *kernelCluster) checkDevice(t *testing.T) {
	h := k.c.Hosts[0]
	if k.backend != "vxlan" {
		if out, err := h.Run("ip", "link", "show", "flannel.1"); err == nil {
			t.Errorf("host-gw created a flannel.1 device:\n%s", out)
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
				Local    string
				Link     string
				Port     int
				Learning bool
			} `json:"info_data"`
		}
		AddrInfo []struct {
			Family, Local string
			Prefixlen     int
		} `json:"addr_info"`
	}
	if err := ipJSON(h, &links, "ip", "-j", "-d", "link", "show", "flannel.1"); err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 {
		t.Fatalf("%d links named flannel.1", len(links))
	}
	l, d := links[0], links[0].Linkinfo.InfoData
	got := fmt.Sprintf("%s id %d dstport %d local %s dev %s learning=%v mtu %d up=%v",
		l.Linkinfo.InfoKind, d.ID, d.Port, d.Local, d.Link, d.Learning, l.MTU, slices.Contains(l.Flags, "UP"))
	want := fmt.Sprintf("vxlan id 1 dstport 8472 local %s dev eth0 learning=false mtu 1450 up=true", h.Addr)
	if got != want {
		t.Errorf("flannel.1: %s\nwant:      %s", got, want)
	}
	if l.Address != k.leases[1].MAC {
		t.Errorf("flannel.1 MAC %s, lease VtepMAC %s", l.Address, k.leases[1].MAC)
	}
	if err := ipJSON(h, &links, "ip", "-j", "addr", "show", "dev", "flannel.1"); err != nil {
		t.Fatal(err)
	}
	var v4 []string
	for _, a := range links[0].AddrInfo {
		if a.Family == "inet" {
			v4 = append(v4, fmt.Sprintf("%s/%d", a.Local, a.Prefixlen))
		}
	}
	if want := []string{netIP(k.leases[1]) + "/32"}; !slices.Equal(v4, want) {
		t.Errorf("flannel.1 IPv4 addresses %v, want %v", v4, want)
	}
}

// deletePeerEntries removes by hand host 1's entries for peer p (2 or 3):
// its route, and for vxlan its fdb entry and neighbour.
func (k *kernelCluster) deletePeerEntries(t *testing.T, p int) {
	t.Helper()
	h, l := k.c.Hosts[0], k.leases[p]
	cmds := [][]string{{"ip", "route", "del", l.Subnet.String()}}
	if k.backend == "vxlan" {
		cmds = append(cmds,
			[]string{"bridge", "fdb", "del", l.MAC, "dev", "flannel.1", "dst", l.Public.String()},
			[]string{"ip", "neigh", "del", netIP(l), "dev", "flannel.1"})
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
	if out, err := testbed.Ping(k.c.Hosts[0].Pods[0].NS, k.c.Hosts[1].Pods[0].Addr.String(), 3); err != nil {
		t.Fatalf("ping after repair: %v\n%s", err, out)
	}
}

// deletedEntry matches ip monitor's report of a deleted route into the
// overlay or a deleted neighbour or fdb entry of flannel.1.
var deletedEntry = regexp.MustCompile(`(?m)^Deleted (198\.18\.\d+\.\d+/\d+ .*|.* dev flannel\.1 .*)$`)

// markerDeleted is ip monitor's line for checkRestart's marker route.
var markerDeleted = regexp.MustCompile(`(?m)^Deleted 192\.0\.2\.128/25 `)

// checkRestart SIGTERMs host 1's flannelu during a 100 pings/s stream
// from a pod of host 1 to a pod of host 2 and starts it again: same
// subnet, same lease value, no peer route (nor, for vxlan, neighbour or
// fdb entry) deleted meanwhile, no packet lost.
func (k *kernelCluster) checkRestart(t *testing.T) {
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
	to := c.Hosts[1].Pods[1].Addr.String()
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
	if err := old.Stop(); err != nil {
		t.Fatalf("flannelu on host 1 did not stop cleanly on SIGTERM: %v%s", err, testbed.Tail(old.Proc.Log, 10))
	}
	passesBefore := k.passes(1) // the old process's, all of them: it has exited
	n, err := c.StartNode(1, k.args...)
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

	if n.Env.Subnet != old.Env.Subnet || n.SubnetFile != old.SubnetFile {
		t.Errorf("restarted host 1 got subnet %v in %s, had %v in %s", n.Env.Subnet, n.SubnetFile, old.Env.Subnet, old.SubnetFile)
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
	fullMesh(t, allPods(k.c, 1, 2))
}
