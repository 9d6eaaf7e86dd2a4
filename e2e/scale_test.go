//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelu/flannelu/testbed"
)

// scalePeers is how many fake peers the scale tests register: enough for
// the start-up's first snapshot to be a real batch, small enough for a
// loaded CI machine (BENCHMARKS.md has the 1,000 and 5,000 runs).
const scalePeers = 500

// scaleNetwork: /29 subnets, as the control-plane bench uses; host 2's
// own is the network's last.
var (
	scaleNetwork = netip.MustParsePrefix("198.18.0.0/16")
	scaleOwn     = netip.MustParsePrefix("198.18.255.248/29")
)

// scaleCluster is one etcd and one kube-apiserver on host 1 and flannelu
// on host 2, with peers registered by testbed.Peers, shared by the scale
// subtests.
type scaleCluster struct {
	c     *testbed.Cluster
	h     *testbed.Host // host 2
	peers *testbed.Peers
	live  []testbed.Peer // the peers that exist now
}

func scaleConfig(backend string) string {
	return fmt.Sprintf(`{"Network":%q,"SubnetLen":29,"SubnetMin":"198.18.255.0","SubnetMax":"198.18.255.248","Backend":{"Type":%q}}`,
		scaleNetwork, backend)
}

// TestScale runs flannelu against 500 peers in both stores: no stale
// state after downtime with every backend (and across a change of
// backend), etcd compaction under the running watch, and a burst of joins
// and deletions with no lost or repeated event.
func TestScale(t *testing.T) {
	testbed.RequireRoot(t)
	c := newClusterWith(t, testbed.ClusterOptions{
		Bed:    testbed.Options{Name: "e2e-scale", Hosts: 2},
		Config: scaleConfig("udp"),
		Kube:   true,
	})
	if err := c.CreateNode(2, scaleOwn.String()); err != nil {
		t.Fatal(err)
	}
	rc := c.KubeAPI.RESTConfig(testbed.AdminUser)
	rc.QPS, rc.Burst = 1000, 1000
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	s := &scaleCluster{c: c, h: c.Hosts[1],
		peers: &testbed.Peers{Network: scaleNetwork, SubnetLen: 29, Etcd: c.Client, Kube: kube, Workers: 8}}
	// Each store goes through the backends in an order that changes
	// backend between two runs: udp to vxlan (flannel0 must go), vxlan to
	// host-gw (flannel.1 must go), host-gw to udp (host-gw's routes must go).
	for _, run := range []struct{ store, backends string }{
		{"etcd", "udp,vxlan,host-gw"},
		{"kube", "udp,vxlan,host-gw"},
	} {
		t.Run("no stale state after downtime/"+run.store, func(t *testing.T) {
			prev := ""
			for _, backend := range strings.Split(run.backends, ",") {
				t.Run(backend, func(t *testing.T) { s.downtime(t, run.store, backend, prev) })
				prev = backend
			}
			s.stop(t)
			s.clear(t)
		})
	}
	t.Run("etcd compaction under the watch", s.compaction)
	t.Run("burst/etcd", func(t *testing.T) { s.burst(t, "etcd") })
	t.Run("burst/kube", func(t *testing.T) { s.burst(t, "kube") })
}

// use configures store and backend and makes every live peer publish it.
func (s *scaleCluster) use(t *testing.T, store, backend string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if store == "kube" {
		if err := os.WriteFile(s.c.NetConfPath, []byte(scaleConfig(backend)), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if _, err := s.c.Client.Put(ctx, testbed.EtcdPrefix+"/config", scaleConfig(backend)); err != nil {
		t.Fatal(err)
	}
	first, same := s.peers.Store != store, s.peers.Backend == backend
	s.peers.Store, s.peers.Backend = store, backend
	if first {
		s.live = s.peers.Next(scalePeers)
		if err := s.peers.CreateAll(ctx, s.live); err != nil {
			t.Fatal(err)
		}
		return
	}
	if same {
		return
	}
	if err := s.peers.ChangeAll(ctx, s.live); err != nil {
		t.Fatal(err)
	}
}

// start starts flannelu on host 2 with the store, its periodic reconcile
// far away: only the start may remove stale entries.
func (s *scaleCluster) start(t *testing.T, store string, extra ...string) *testbed.Node {
	t.Helper()
	args := append([]string{"--iface", "eth0", "--reconcile-interval", "10m"}, extra...)
	if store == "kube" {
		s.c.Opts.Kube = true
	} else {
		s.c.Opts.Kube = false
	}
	return startNode(t, s.c, 2, args...)
}

func (s *scaleCluster) stop(t *testing.T) {
	t.Helper()
	if n := s.c.Nodes[2]; n != nil && !n.Proc.Exited() {
		if err := n.Stop(); err != nil {
			t.Errorf("flannelu did not stop cleanly: %v%s", err, testbed.Tail(n.Proc.Log, 10))
		}
	}
}

// clear deletes every peer of the current store.
func (s *scaleCluster) clear(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.peers.DeleteAll(ctx, s.peers.Made()); err != nil {
		t.Fatal(err)
	}
	s.live = nil
}

// downtime: flannelu runs with the live peers, stops; meanwhile 100 peers
// are deleted, 100 change public IP (and VTEP MAC), 50 join, and a user
// adds routes of their own; flannelu starts again and, before any
// periodic pass could run, host 2 has exactly the peers that exist now,
// the user's routes, and nothing of the backend that ran before.
func (s *scaleCluster) downtime(t *testing.T, store, backend, prev string) {
	s.use(t, store, backend)
	n := s.start(t, store)
	if err := s.waitState(n, backend, s.live); err != nil {
		t.Fatalf("after the start into %d peers: %v", len(s.live), err)
	}
	if err := s.noLeftovers(backend); err != nil {
		t.Errorf("after %s: %v", prev, err)
	}
	s.stop(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gone, changed, kept := s.live[:100], s.live[100:200], s.live[200:]
	for i := range changed {
		changed[i] = s.peers.Changed(changed[i])
	}
	joined := s.peers.Next(50)
	if err := s.peers.DeleteAll(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := s.peers.ChangeAll(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if err := s.peers.CreateAll(ctx, joined); err != nil {
		t.Fatal(err)
	}
	s.live = append(append(append([]testbed.Peer(nil), changed...), kept...), joined...)
	user := []string{"198.18.250.0/24 via 192.0.2.99 dev eth0 proto static", "203.0.113.0/24 via 192.0.2.99 dev eth0"}
	for _, r := range user {
		s.h.MustRun(append([]string{"ip", "route", "replace"}, strings.Fields(r)...)...)
	}

	n = s.start(t, store)
	if err := s.waitState(n, backend, s.live); err != nil {
		t.Fatalf("after the restart (%d deleted, %d changed, %d joined while down): %v", len(gone), len(changed), len(joined), err)
	}
	out := s.h.MustRun("ip", "route", "show", "dev", "eth0")
	for _, r := range user {
		dst := strings.Fields(r)[0]
		if !strings.Contains(out, dst+" via 192.0.2.99") {
			t.Errorf("the user's route %s was removed:\n%s", dst, out)
		}
		s.h.MustRun("ip", "route", "del", dst)
	}
}

// noLeftovers checks that nothing of another backend is on host 2.
func (s *scaleCluster) noLeftovers(backend string) error {
	links := s.h.MustRun("ip", "-o", "link", "show")
	for dev, owner := range map[string]string{"flannel0:": "udp", "flannel.1:": "vxlan"} {
		if owner != backend && strings.Contains(links, " "+dev) {
			return fmt.Errorf("%s of the %s backend is still there", strings.TrimSuffix(dev, ":"), owner)
		}
	}
	if backend != "host-gw" {
		if r := s.h.MustRun("ip", "route", "show", "dev", "eth0", "proto", "boot"); strings.Contains(r, "198.18.") {
			return fmt.Errorf("host-gw's routes are still there:\n%s", r)
		}
	}
	return nil
}

// waitState waits until host 2's peer state is exactly peers: for vxlan
// the routes, neighbours and fdb entries on flannel.1, for host-gw the
// routes via eth0, for udp the route table's size and flannel0's one
// route (the table lives in flannelu and is built anew at each start).
func (s *scaleCluster) waitState(n *testbed.Node, backend string, peers []testbed.Peer) error {
	var last error
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if last = s.state(n, backend, peers); last == nil {
			return nil
		}
		if n.Proc.Exited() {
			return fmt.Errorf("flannelu exited: %v%s", last, testbed.Tail(n.Proc.Log, 15))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func (s *scaleCluster) state(n *testbed.Node, backend string, peers []testbed.Peer) error {
	if backend == "udp" {
		table, err := n.Metric("flannelu_udp_route_table_peers")
		if err != nil {
			return err
		}
		if int(table) != len(peers) {
			return fmt.Errorf("the route table has %v peers, want %d", table, len(peers))
		}
		return nil
	}
	ns, err := netns.GetFromName(s.h.Name)
	if err != nil {
		return err
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	dev := "eth0"
	if backend == "vxlan" {
		dev = "flannel.1"
	}
	link, err := nl.LinkByName(dev)
	if err != nil {
		return err
	}
	routes, err := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	want := map[string]string{} // entry -> what
	for _, p := range peers {
		gw := p.PublicIP.String()
		if backend == "vxlan" {
			gw = p.Subnet.Addr().String()
			want["neigh "+p.Subnet.Addr().String()+" "+p.VtepMAC.String()] = p.Name
			want["fdb "+p.VtepMAC.String()+" "+p.PublicIP.String()] = p.Name
		}
		want["route "+p.Subnet.String()+" via "+gw] = p.Name
	}
	have := map[string]bool{}
	for _, r := range routes {
		if r.Dst != nil && r.Gw != nil && r.Protocol == unix.RTPROT_BOOT && scaleNetwork.Contains(netip.MustParseAddr(r.Dst.IP.String())) {
			have["route "+r.Dst.String()+" via "+r.Gw.String()] = true
		}
	}
	if backend == "vxlan" {
		neighs, err := nl.NeighList(link.Attrs().Index, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, nb := range neighs {
			if nb.State&netlink.NUD_PERMANENT != 0 {
				have["neigh "+nb.IP.String()+" "+nb.HardwareAddr.String()] = true
			}
		}
		fdb, err := nl.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, f := range fdb {
			if f.IP != nil {
				have["fdb "+f.HardwareAddr.String()+" "+f.IP.String()] = true
			}
		}
	}
	var stale, missing []string
	for e := range have {
		if want[e] == "" {
			stale = append(stale, e)
		}
	}
	for e := range want {
		if !have[e] {
			missing = append(missing, e)
		}
	}
	if len(stale)+len(missing) > 0 {
		return fmt.Errorf("%d stale entries (%s), %d missing (%s)", len(stale), first(stale), len(missing), first(missing))
	}
	return nil
}

func first(s []string) string {
	if len(s) > 3 {
		return strings.Join(s[:3], "; ") + "; ..."
	}
	return strings.Join(s, "; ")
}

// relisted is flannelu's line when its etcd watch could not resume.
var relisted = regexp.MustCompile(`(?m)msg="lease watch interrupted, listing again".*compacted`)

// compaction: flannelu's connection to etcd (through a proxy) is held
// while 50 leases are deleted and 50 added and etcd is compacted at its
// revision, then dropped: its watch resumes from a compacted revision.
// It lists again once (one log line), applies exactly the changes, and
// keeps following the watch afterwards (no relist loop).
func (s *scaleCluster) compaction(t *testing.T) {
	s.use(t, "etcd", "vxlan")
	proxy, err := testbed.NewEtcdProxy(s.c.Hosts[0], 23799, testbed.ListenAddr(s.c.Hosts[0].Addr, testbed.EtcdPort))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	defer s.stop(t)
	n := s.start(t, "etcd", "--etcd-endpoints", "http://"+proxy.Addr)
	if err := s.waitState(n, "vxlan", s.live); err != nil {
		t.Fatal(err)
	}
	proxy.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gone := s.live[:50]
	joined := s.peers.Next(50)
	if err := s.peers.DeleteAll(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := s.peers.CreateAll(ctx, joined); err != nil {
		t.Fatal(err)
	}
	resp, err := s.c.Client.Get(ctx, testbed.EtcdPrefix+"/config")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Client.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	proxy.Resume()
	s.live = append(s.live[50:], joined...)
	if err := s.waitState(n, "vxlan", s.live); err != nil {
		t.Fatalf("after the compaction: %v", err)
	}
	// One more lease, applied through the resumed watch: by then a relist
	// loop would have logged again.
	late := s.peers.Next(1)
	if err := s.peers.CreateAll(ctx, late); err != nil {
		t.Fatal(err)
	}
	s.live = append(s.live, late...)
	if err := s.waitState(n, "vxlan", s.live); err != nil {
		t.Fatalf("after a lease added once caught up: %v", err)
	}
	b, _ := os.ReadFile(n.Proc.Log)
	if got := len(relisted.FindAll(b, -1)); got != 1 {
		t.Errorf("%d lines saying the watch was compacted and listed again, want 1:%s", got, testbed.Tail(n.Proc.Log, 10))
	}
}

// burst: 300 peers join as fast as 8 clients can register them, then
// leave; host 2 routes every one exactly once and removes it exactly once
// (vxlan: the route is the last of a peer's entries, programmed once).
func (s *scaleCluster) burst(t *testing.T, store string) {
	s.stop(t)
	if s.peers.Store != store {
		s.clear(t)
	}
	s.use(t, store, "vxlan")
	n := s.start(t, store)
	defer s.stop(t)
	if err := s.waitState(n, "vxlan", s.live); err != nil {
		t.Fatal(err)
	}
	routes := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	ns, err := netns.GetFromName(s.h.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns,
		ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true}); err != nil {
		t.Fatal(err)
	}
	defer close(done)
	adds, dels := map[string]int{}, map[string]int{}
	count := func(until func() bool) {
		deadline := time.After(60 * time.Second)
		for !until() {
			select {
			case u := <-routes:
				if u.Dst == nil || !scaleNetwork.Contains(netip.MustParseAddr(u.Dst.IP.String())) {
					continue
				}
				if u.Type == unix.RTM_NEWROUTE {
					adds[u.Dst.String()]++
				} else {
					dels[u.Dst.String()]++
				}
			case <-deadline:
				return
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	joins := s.peers.Next(300)
	if err := s.peers.CreateAll(ctx, joins); err != nil {
		t.Fatal(err)
	}
	count(func() bool { return len(adds) >= len(joins) })
	if err := s.peers.DeleteAll(ctx, joins); err != nil {
		t.Fatal(err)
	}
	count(func() bool { return len(dels) >= len(joins) })
	for _, p := range joins {
		if a, d := adds[p.Subnet.String()], dels[p.Subnet.String()]; a != 1 || d != 1 {
			t.Errorf("%s (%s): routed %d times, removed %d times; want once each", p.Name, p.Subnet, a, d)
		}
	}
	if len(adds) != len(joins) || len(dels) != len(joins) {
		t.Errorf("route changes for %d and %d subnets, want the %d joined", len(adds), len(dels), len(joins))
	}
	if err := s.waitState(n, "vxlan", s.live); err != nil {
		t.Errorf("after the burst: %v", err)
	}
}
