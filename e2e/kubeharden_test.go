package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelu/flannelu/testbed"
)

// annPrefix is flannel's default annotation prefix.
const annPrefix = "flannel.alpha.coreos.com/"

// TestKubernetesHardening runs the hostile probe's Kubernetes cases on one
// vxlan cluster of three nodes (one API server for all: each case leaves
// the cluster as it found it, but the last, which deletes node 3):
// nested peer podCIDRs, a peer claiming a node's own podCIDR, invalid
// VtepMACs, an invalid public-ip-overwrite (a peer's at run time, the
// node's own at start), NetworkUnavailable flipped back by someone else, an
// API server outage, and the own node deleted.
func TestKubernetesHardening(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newClusterWith(t, testbed.ClusterOptions{
		Bed:    testbed.Options{Name: "e2e-khard", Hosts: 3},
		Config: ipv4.kubeConfig("vxlan"),
		Kube:   true,
	})
	for i := 1; i <= 3; i++ {
		n, err := c.JoinNode(i, "--ip-masq")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.AddCNIPods(1); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[2].Pods[0].Addr)
	k := &kubeProbe{t: t, c: c}
	t.Run("nested peer podCIDRs: the older node's wins", k.checkNestedPodCIDRs)
	t.Run("a peer claiming this node's podCIDR", k.checkOwnPodCIDRClaimed)
	t.Run("invalid VtepMAC keeps the last valid one", k.checkInvalidVtepMAC)
	t.Run("invalid public-ip-overwrite on a running node", k.checkPeerOverwrite)
	t.Run("NetworkUnavailable set back to True is restored", k.checkNetworkUnavailable)
	t.Run("API server outage: logged, /readyz 503, gauge", k.checkAPIOutage)
	t.Run("API server silently cut off from one node", k.checkAPIPartition)
	t.Run("invalid own public-ip-overwrite refused at start", k.checkOwnOverwriteAtStart)
	t.Run("own node deleted: its peer entries go, then it exits", k.checkOwnNodeDeleted)
}

type kubeProbe struct {
	t *testing.T
	c *testbed.Cluster
}

func (k *kubeProbe) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// fakePeer registers a Node that looks like a vxlan flannel node (its
// flannel annotations, its podCIDR) at a public address no host has: what
// the peers program for it is the test's to read, and nothing restores
// its annotations behind the test's back.
func (k *kubeProbe) fakePeer(t *testing.T, name, podCIDR, publicIP, mac string) {
	t.Helper()
	ann := map[string]string{annPrefix + "kube-subnet-manager": "true", annPrefix + "backend-type": "vxlan",
		annPrefix + "backend-data": fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac), annPrefix + "public-ip": publicIP}
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
		Spec: v1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
	ctx, cancel := k.ctx()
	defer cancel()
	if _, err := k.c.KubeAdmin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (k *kubeProbe) deleteNode(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := k.ctx()
	defer cancel()
	if err := k.c.KubeAdmin.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// annotate sets (a nil value: removes) annotations of a node, as a user
// with kubectl annotate would.
func (k *kubeProbe) annotate(t *testing.T, name string, set map[string]*string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": set}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := k.ctx()
	defer cancel()
	if _, err := k.c.KubeAdmin.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (k *kubeProbe) node(t *testing.T, name string) *v1.Node {
	t.Helper()
	ctx, cancel := k.ctx()
	defer cancel()
	n, err := k.c.KubeAdmin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func str(s string) *string { return &s }

// metricsOf reads a metric on each running node (by host index).
func (k *kubeProbe) metricsOf(name string, hosts ...int) map[int]float64 {
	out := map[int]float64{}
	for _, i := range hosts {
		out[i], _ = k.c.Nodes[i].Metric(name)
	}
	return out
}

func (k *kubeProbe) waitMetricsAbove(t *testing.T, name string, base map[int]float64) {
	t.Helper()
	for i, v := range base {
		waitMetricAbove(t, k.c.Nodes[i], name, v)
	}
}

// vxPeer is what a host programs for one vxlan peer subnet: the route's
// gateway, the PERMANENT neighbour's MAC and the fdb entries to that MAC.
type vxPeer struct {
	route, neigh string
	fdb          []string // "mac dst ip"
}

func (p vxPeer) String() string {
	return fmt.Sprintf("route via %q, neighbour %q, fdb %v", p.route, p.neigh, p.fdb)
}

func readVxPeer(t *testing.T, h *testbed.Host, sn netip.Prefix) vxPeer {
	t.Helper()
	var p vxPeer
	var routes []struct{ Dst, Gateway string }
	if err := ipJSON(h, &routes, "ip", "-j", "route", "show", sn.String()); err != nil {
		t.Fatal(err)
	}
	if len(routes) > 0 {
		p.route = routes[0].Gateway
	}
	var neighs []struct {
		Dst, Lladdr string
		State       []string
	}
	if err := ipJSON(h, &neighs, "ip", "-j", "neigh", "show", "dev", "flannel.1", "to", sn.Addr().String()); err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if slices.Contains(n.State, "PERMANENT") {
			p.neigh = n.Lladdr
		}
	}
	var fdb []struct{ Mac, Dst string }
	if err := ipJSON(h, &fdb, "bridge", "-j", "fdb", "show", "dev", "flannel.1"); err != nil {
		t.Fatal(err)
	}
	for _, e := range fdb {
		if e.Mac == p.neigh && p.neigh != "" {
			p.fdb = append(p.fdb, e.Mac+" dst "+e.Dst)
		}
	}
	return p
}

// waitVxPeer waits until every host has exactly want for sn (a zero want:
// nothing).
func (k *kubeProbe) waitVxPeer(t *testing.T, sn netip.Prefix, want vxPeer, hosts ...int) {
	t.Helper()
	if err := testbed.Eventually(20*time.Second, func() error {
		for _, i := range hosts {
			if got := readVxPeer(t, k.c.Hosts[i-1], sn); got.String() != want.String() {
				return fmt.Errorf("host %d for %s: %v, want %v", i, sn, got, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func vxPeerOf(sn netip.Prefix, public, mac string) vxPeer {
	return vxPeer{route: sn.Addr().String(), neigh: mac, fdb: []string{mac + " dst " + public}}
}

// logged waits until a node's log has a line matching re.
func (k *kubeProbe) logged(t *testing.T, i int, re string) {
	t.Helper()
	if err := k.c.Nodes[i].Proc.WaitLog(regexp.MustCompile(re), 15*time.Second); err != nil {
		t.Fatalf("host %d: %v", i, err)
	}
}

// checkNestedPodCIDRs registers two pairs of nodes whose podCIDRs nest
// (the 198.18.8.0/24 and 198.18.8.0/22; 198.18.4.0/23 and
// 198.18.5.0/24), the older of each first: every host routes the older
// node's podCIDR only, counts the younger as overlaps_peer and names it in
// a log line; when the older node goes, the younger one is routed.
func (k *kubeProbe) checkNestedPodCIDRs(t *testing.T) {
	hosts := []int{1, 2, 3}
	type fake struct{ name, podCIDR, publicIP, mac string }
	for _, tc := range []struct{ older, younger fake }{
		{fake{"nest-8", "198.18.8.0/24", "192.0.2.208", "02:00:00:00:01:08"}, fake{"nest-9", "198.18.8.0/22", "192.0.2.209", "02:00:00:00:01:09"}},
		{fake{"nest-4", "198.18.4.0/23", "192.0.2.204", "02:00:00:00:01:04"}, fake{"nest-5", "198.18.5.0/24", "192.0.2.205", "02:00:00:00:01:05"}},
	} {
		base := k.metricsOf(invalidLeases("overlaps_peer"), hosts...)
		old, young := tc.older, tc.younger
		oldSN, youngSN := netip.MustParsePrefix(old.podCIDR), netip.MustParsePrefix(young.podCIDR)
		k.fakePeer(t, old.name, old.podCIDR, old.publicIP, old.mac)
		k.fakePeer(t, young.name, young.podCIDR, young.publicIP, young.mac)
		// Name order agrees with creation order, so the older one wins
		// even when both were created in the same second (the tie rule).
		k.waitMetricsAbove(t, invalidLeases("overlaps_peer"), base)
		for _, i := range hosts {
			k.logged(t, i, `msg="invalid peer lease ignored" key=`+young.name+` subnet=`+regexp.QuoteMeta(young.podCIDR)+
				`.* reason=overlaps_peer error="its subnet `+regexp.QuoteMeta(young.podCIDR)+` overlaps `+regexp.QuoteMeta(old.podCIDR)+
				` of the earlier lease `+old.name+`"`)
		}
		k.waitVxPeer(t, oldSN, vxPeerOf(oldSN, old.publicIP, old.mac), hosts...)
		for _, i := range hosts {
			h := k.c.Hosts[i-1]
			if hasRoute(h, youngSN) {
				t.Errorf("host %d routes the younger %s", i, youngSN)
			}
			if out := h.MustRun("bridge", "fdb", "show", "dev", "flannel.1"); strings.Contains(out, young.mac) {
				t.Errorf("host %d has an fdb entry for the younger node's VtepMAC %s:\n%s", i, young.mac, out)
			}
		}
		// The older goes: the younger is used now.
		k.deleteNode(t, old.name)
		k.waitVxPeer(t, youngSN, vxPeerOf(youngSN, young.publicIP, young.mac), hosts...)
		if err := routed(k.c, oldSN, false, hosts...); err != nil {
			t.Fatal(err)
		}
		k.deleteNode(t, young.name)
		k.waitVxPeer(t, youngSN, vxPeer{}, hosts...)
	}
}

// checkOwnPodCIDRClaimed registers a node with node 1's podCIDR: node 1
// logs it and counts it as overlaps_own, the others as overlaps_peer (node
// 1's node is older), and node 1's pods are still reached at node 1.
func (k *kubeProbe) checkOwnPodCIDRClaimed(t *testing.T) {
	own, peers := k.metricsOf(invalidLeases("overlaps_own"), 1), k.metricsOf(invalidLeases("overlaps_peer"), 2, 3)
	k.fakePeer(t, "claim-1", testbed.PodCIDR(1).String(), "192.0.2.211", "02:00:00:00:02:11")
	k.waitMetricsAbove(t, invalidLeases("overlaps_own"), own)
	k.waitMetricsAbove(t, invalidLeases("overlaps_peer"), peers)
	k.logged(t, 1, `msg="invalid peer lease ignored" key=claim-1 subnet=198\.18\.1\.0/24 .*reason=overlaps_own error="subnet 198\.18\.1\.0/24 overlaps this host's 198\.18\.1\.0/24"`)
	for _, i := range []int{2, 3} {
		if out, err := testbed.Ping(k.c.Hosts[i-1].Pods[0].NS, k.c.Hosts[0].Pods[0].Addr.String(), 3); err != nil {
			t.Errorf("host %d's pod to host 1's while claim-1 claims its podCIDR: %v\n%s", i, err, out)
		}
	}
	k.deleteNode(t, "claim-1")
}

// checkInvalidVtepMAC rewrites a peer's backend-data with each invalid
// VtepMAC of the probe (zz:zz:zz, multicast, zero, missing, an array): a
// node that only the test writes keeps its route, neighbour and fdb entry
// with the last valid MAC on every host, and each write counts as
// bad_backend_data; on a real peer (node 2, whose flannelu writes its
// value back) a 100/s ping from node 1's pod loses nothing.
func (k *kubeProbe) checkInvalidVtepMAC(t *testing.T) {
	hosts := []int{1, 2, 3}
	sn := netip.MustParsePrefix("198.18.30.0/24")
	k.fakePeer(t, "vtep-30", sn.String(), "192.0.2.230", "02:00:00:00:03:30")
	good := vxPeerOf(sn, "192.0.2.230", "02:00:00:00:03:30")
	k.waitVxPeer(t, sn, good, hosts...)
	bad := []string{`{"VNI":1,"VtepMAC":"zz:zz:zz"}`, `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`,
		`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`, `{"VNI":1}`, `[{"VNI":1,"VtepMAC":"02:00:00:00:03:31"}]`}
	for _, data := range bad {
		base := k.metricsOf(invalidLeases("bad_backend_data"), hosts...)
		k.annotate(t, "vtep-30", map[string]*string{annPrefix + "backend-data": str(data)})
		k.waitMetricsAbove(t, invalidLeases("bad_backend_data"), base)
		for _, i := range hosts {
			if got := readVxPeer(t, k.c.Hosts[i-1], sn); got.String() != good.String() {
				t.Errorf("backend-data %s: host %d has %v, want the last valid %v", data, i, got, good)
			}
		}
	}
	k.logged(t, 1, `msg="invalid peer lease write ignored; its last valid value stays in use" key=vtep-30 .*reason=bad_backend_data`)
	k.deleteNode(t, "vtep-30")
	k.waitVxPeer(t, sn, vxPeer{}, hosts...)

	// A real peer: its flannelu writes its value back; meanwhile node 1
	// keeps forwarding to it.
	stop := pinger(t, k.c, "ping-vtep", k.c.Hosts[0].Pods[0], k.c.Hosts[1].Pods[0].Addr.String())
	name := k.c.Hosts[1].Name
	want := k.node(t, name).Annotations[annPrefix+"backend-data"]
	base := k.metricsOf(invalidLeases("bad_backend_data"), 1, 3)
	k.annotate(t, name, map[string]*string{annPrefix + "backend-data": str(bad[0])})
	k.waitMetricsAbove(t, invalidLeases("bad_backend_data"), base)
	if err := testbed.Eventually(20*time.Second, func() error {
		if got := k.node(t, name).Annotations[annPrefix+"backend-data"]; got != want {
			return fmt.Errorf("node 2's backend-data %s, want its own %s back", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sent, received := stop()
	noLoss(t, "pod 1 to pod 2 while node 2's VtepMAC was zz:zz:zz", sent, received)
}

// checkPeerOverwrite sets node 2's public-ip-overwrite to something that
// is not an IP while it runs: node 2 does not publish it (its public-ip
// stays its address) and says so; the peers count the bad overwrite and
// keep reaching node 2's pod.
func (k *kubeProbe) checkPeerOverwrite(t *testing.T) {
	name, addr := k.c.Hosts[1].Name, k.c.Hosts[1].Addr.String()
	base := k.metricsOf("flannelu_malformed_leases_total", 1, 3)
	k.annotate(t, name, map[string]*string{annPrefix + "public-ip-overwrite": str("not-an-ip")})
	k.logged(t, 2, `msg="ignoring the node's public IP overwrite: not an address; the node keeps its published public IP".*public-ip-overwrite=\\"not-an-ip\\"`)
	k.waitMetricsAbove(t, "flannelu_malformed_leases_total", base)
	if got := k.node(t, name).Annotations[annPrefix+"public-ip"]; got != addr {
		t.Errorf("node 2 published public-ip %q, want its address %s", got, addr)
	}
	for _, i := range []int{1, 3} {
		if out, err := testbed.Ping(k.c.Hosts[i-1].Pods[0].NS, k.c.Hosts[1].Pods[0].Addr.String(), 3); err != nil {
			t.Errorf("host %d's pod to host 2's: %v\n%s", i, err, out)
		}
	}
	k.annotate(t, name, map[string]*string{annPrefix + "public-ip-overwrite": nil})
}

// checkNetworkUnavailable sets node 2's NetworkUnavailable condition to
// True, as a cloud route controller or an operator might: flannelu sets it
// back to False (FlannelIsUp).
func (k *kubeProbe) checkNetworkUnavailable(t *testing.T) {
	name := k.c.Hosts[1].Name
	patch := []byte(`{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated","message":"set by the test"}]}}`)
	ctx, cancel := k.ctx()
	defer cancel()
	flipped := time.Now()
	if _, err := k.c.KubeAdmin.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	if err := testbed.Eventually(20*time.Second, func() error { return flannelIsUp(k.node(t, name)) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("NetworkUnavailable True -> False (FlannelIsUp) again in %v", time.Since(flipped).Round(time.Millisecond))
	k.logged(t, 2, `msg="the node's NetworkUnavailable condition was set by someone else: setting it back to False"`)
}

// checkAPIOutage kills the API server, waits until every node says so,
// keeps it down a few seconds more and starts it again: each node logs the
// outage once when it starts and once when it ends, answers /readyz 503
// naming the API server meanwhile, and exports flannelu_store_reachable 0
// then 1; pods keep reaching each other.
func (k *kubeProbe) checkAPIOutage(t *testing.T) {
	c, hosts := k.c, []int{1, 2, 3}
	for _, i := range hosts {
		waitReadyz(t, c.Nodes[i], http.StatusOK, "store: reachable")
	}
	stop := pinger(t, c, "ping-api-outage", c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr.String())
	killed := time.Now()
	if err := c.KubeAPI.Stop(); err != nil {
		t.Fatal(err)
	}
	defer func() { // the cases after this one need it, even when this one failed
		if c.KubeAPI.Proc.Exited() {
			if err := c.KubeAPI.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	down := regexp.MustCompile(`level=WARN msg="Kubernetes API unreachable" endpoint=` + regexp.QuoteMeta(c.KubeAPI.URL) + ` error=`)
	for _, i := range hosts {
		n := c.Nodes[i]
		if err := waitLines(n.Proc, down, 1, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		waitReadyz(t, n, http.StatusServiceUnavailable, "store: Kubernetes API ("+c.KubeAPI.URL+") unreachable for")
		if v, err := n.Metric("flannelu_store_reachable"); err != nil || v != 0 {
			t.Errorf("host %d during the outage: flannelu_store_reachable %v, %v; want 0", i, v, err)
		}
	}
	t.Logf("API server killed -> every node unready: %v", time.Since(killed).Round(time.Millisecond))
	if err := c.KubeAPI.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	up := regexp.MustCompile(`level=INFO msg="Kubernetes API reachable again" endpoint=\S+ outage=\d`)
	for _, i := range hosts {
		n := c.Nodes[i]
		if err := waitLines(n.Proc, up, 1, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		waitReadyz(t, n, http.StatusOK, "store: reachable")
		if v, err := n.Metric("flannelu_store_reachable"); err != nil || v != 1 {
			t.Errorf("host %d after the outage: flannelu_store_reachable %v, %v; want 1", i, v, err)
		}
		text, _ := os.ReadFile(n.Proc.Log)
		if d := len(down.FindAll(text, -1)); d != 1 {
			t.Errorf("host %d logged the outage's start %d times, want once", i, d)
		}
		if r := strings.Count(string(text), `msg="node list or watch failed; retrying"`); r != 0 {
			t.Errorf("host %d logged %d retries of the node watch besides the outage lines", i, r)
		}
	}
	t.Logf("API server ready again -> every node ready: %v (outage %v)", time.Since(restarted).Round(time.Millisecond),
		time.Since(killed).Round(time.Millisecond))
	sent, received := stop()
	noLoss(t, "pod 1 to pod 2 through the API server outage", sent, received)
	t.Logf("host 1's outage lines:%s", grepLog(c.Nodes[1].Proc.Log, "Kubernetes API"))
}

// apiPartitionNoticed bounds how long a node takes to report an API server
// that stopped answering without a word (its packets dropped): flannelu
// asks it something every kube.ProbeInterval and gives up on an answer
// after kube.ProbeTimeout, as the etcd store's keeper reads its key.
const apiPartitionNoticed = 30 * time.Second

// checkAPIPartition drops every packet between node 2 and the API server
// (a silent partition: no refusal, no reset), as a cut cable or a
// firewall would: node 2 logs the outage once, answers /readyz 503 naming
// the API server and exports flannelu_store_reachable 0 within
// apiPartitionNoticed; once the packets flow again it says so and is
// ready; pods keep reaching each other throughout.
func (k *kubeProbe) checkAPIPartition(t *testing.T) {
	c, n, h := k.c, k.c.Nodes[2], k.c.Hosts[1]
	waitReadyz(t, n, http.StatusOK, "store: reachable")
	api := c.KubeAPI.Host.Addr.String()
	rules := [][]string{
		{"OUTPUT", "-p", "tcp", "-d", api, "--dport", strconv.Itoa(testbed.KubeAPIPort), "-j", "DROP"},
		{"INPUT", "-p", "tcp", "-s", api, "--sport", strconv.Itoa(testbed.KubeAPIPort), "-j", "DROP"},
	}
	heal := func() {
		for _, r := range rules {
			h.Run(append([]string{"iptables", "-w", "-D"}, r...)...) //nolint:errcheck // gone already after the first heal
		}
	}
	defer heal()
	up := regexp.MustCompile(`level=INFO msg="Kubernetes API reachable again" endpoint=\S+ outage=\d`)
	down := regexp.MustCompile(`level=WARN msg="Kubernetes API unreachable" endpoint=` + regexp.QuoteMeta(c.KubeAPI.URL) + ` error=`)
	text, _ := os.ReadFile(n.Proc.Log) // checkAPIOutage's lines come before
	upBefore, downBefore := len(up.FindAll(text, -1)), len(down.FindAll(text, -1))
	stop := pinger(t, c, "ping-api-partition", c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr.String())
	cut := time.Now()
	for _, r := range rules {
		h.MustRun(append([]string{"iptables", "-w", "-I"}, r...)...)
	}
	if err := waitLines(n.Proc, down, downBefore+1, apiPartitionNoticed); err != nil {
		t.Fatalf("node 2 cut off from the API server: %v", err)
	}
	noticed := time.Since(cut)
	waitReadyz(t, n, http.StatusServiceUnavailable, "store: Kubernetes API ("+c.KubeAPI.URL+") unreachable for")
	if v, err := n.Metric("flannelu_store_reachable"); err != nil || v != 0 {
		t.Errorf("node 2 cut off: flannelu_store_reachable %v, %v; want 0", v, err)
	}
	t.Logf("node 2 cut off from the API server -> logged %v later, /readyz 503 %v later", noticed.Round(time.Millisecond),
		time.Since(cut).Round(time.Millisecond))
	heal()
	healed := time.Now()
	if err := waitLines(n.Proc, up, upBefore+1, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, n, http.StatusOK, "store: reachable")
	t.Logf("packets flow again -> node 2 ready %v later", time.Since(healed).Round(time.Millisecond))
	t.Logf("node 2's outage lines:%s", grepLog(n.Proc.Log, "Kubernetes API"))
	sent, received := stop()
	noLoss(t, "pod 1 to pod 2 while node 2 was cut off from the API server", sent, received)
	if n.Proc.Exited() {
		t.Fatalf("flannelu on node 2 exited:%s", testbed.Tail(n.Proc.Log, 10))
	}
}

// checkOwnOverwriteAtStart restarts node 3's flannelu with a
// public-ip-overwrite that is not an IP on its node: it exits at start
// with an error naming the annotation and publishes nothing; without the
// annotation it starts again.
func (k *kubeProbe) checkOwnOverwriteAtStart(t *testing.T) {
	c, name := k.c, k.c.Hosts[2].Name
	if err := c.Nodes[3].Stop(); err != nil {
		t.Fatal(err)
	}
	k.annotate(t, name, map[string]*string{annPrefix + "public-ip-overwrite": str("192.0.2.300")})
	n, err := c.LaunchNode(3, "--ip-masq")
	if err != nil {
		t.Fatal(err)
	}
	if exited, err := n.Proc.Wait(30 * time.Second); !exited || err == nil {
		t.Fatalf("flannelu with an invalid public-ip-overwrite: exited %v, %v; want an error exit:%s", exited, err, testbed.Tail(n.Proc.Log, 5))
	}
	refused := regexp.MustCompile(`level=ERROR msg="flannelu stopped" error=.*annotation ` + regexp.QuoteMeta(annPrefix) +
		`public-ip-overwrite=\\"192\.0\.2\.300\\" is not an IPv4 address`)
	if err := n.Proc.WaitLog(refused, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := k.node(t, name).Annotations[annPrefix+"public-ip"]; got != c.Hosts[2].Addr.String() {
		t.Errorf("node 3's public-ip %q after the refused start, want %s", got, c.Hosts[2].Addr)
	}
	k.annotate(t, name, map[string]*string{annPrefix + "public-ip-overwrite": nil})
	if _, err := c.StartNode(3, "--ip-masq"); err != nil {
		t.Fatal(err)
	}
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[2].Pods[0].Addr)
}

// checkOwnNodeDeleted deletes node 3: its flannelu removes the routes,
// neighbours and fdb entries it made for nodes 1 and 2, then exits saying
// its node was deleted.
func (k *kubeProbe) checkOwnNodeDeleted(t *testing.T) {
	c, h3 := k.c, k.c.Hosts[2]
	for _, i := range []int{1, 2} {
		if got := readVxPeer(t, h3, testbed.PodCIDR(i)); got.route == "" || got.neigh == "" || len(got.fdb) == 0 {
			t.Fatalf("host 3 before: %v for node %d", got, i)
		}
	}
	deleted := time.Now()
	k.deleteNode(t, h3.Name)
	n3 := c.Nodes[3]
	if exited, _ := n3.Proc.Wait(30 * time.Second); !exited {
		t.Fatalf("flannelu on host 3 still runs after its node was deleted")
	}
	t.Logf("node 3 deleted -> its flannelu exited: %v", time.Since(deleted).Round(time.Millisecond))
	if err := n3.Proc.WaitLog(regexp.MustCompile(`msg="flannelu stopped" error=".*lease lost \(this host was removed from the network\): node \\"`+
		regexp.QuoteMeta(h3.Name)+`\\" was deleted`), time.Second); err != nil {
		t.Error(err)
	}
	for _, i := range []int{1, 2} {
		if got := readVxPeer(t, h3, testbed.PodCIDR(i)); got.route != "" || got.neigh != "" || len(got.fdb) != 0 {
			t.Errorf("host 3 after its node was deleted still has %v for node %d", got, i)
		}
	}
	if out := h3.MustRun("bridge", "fdb", "show", "dev", "flannel.1"); strings.Contains(out, "dst") {
		t.Errorf("host 3's flannel.1 fdb after its node was deleted:\n%s", out)
	}
}
