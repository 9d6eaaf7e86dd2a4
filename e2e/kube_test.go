package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelu/flannelu/testbed"
)

// TestKubernetesMode runs flannelu with --kube-subnet-mgr against a real
// kube-apiserver, as flannel's service account, for every backend: three
// nodes the test registers with podCIDRs (as kubelet and
// kube-controller-manager would), a fourth that joins late and without a
// podCIDR at first, an API server restart under traffic, and a node
// deleted.
func TestKubernetesMode(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	for _, backend := range []string{"udp", "vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			k := newKubeCluster(t, backend, ipv4)
			t.Run("annotations and subnet.env as flanneld writes them", k.checkAnnotations)
			t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, allPods(k.c, 1, 2, 3)) })
			t.Run("100 MB TCP byte for byte", func(t *testing.T) {
				transfer(t, k.c.Bed, k.c.Hosts[0].Pods[0], k.c.Hosts[1].Pods[1], 100<<20)
			})
			t.Run("API server restarted under traffic", k.checkAPIServerRestart)
			t.Run("late node without a podCIDR", k.checkLateNode)
			t.Run("node deleted", k.checkNodeDeleted)
			t.Run("hand-over to a second flannelu loses no packet", k.checkHandOver)
		})
	}
}

// checkHandOver starts a second flannelu on node 1, as a DaemonSet with
// maxSurge does, under a 100 pings/s stream from one of its pods: the
// first one leaves (exit 0), no ping is lost, and the node's annotations
// stay flanneld's.
func (k *kubeCluster) checkHandOver(t *testing.T) {
	c, old := k.c, k.c.Nodes[1]
	ping := startPing(t, c, "ping-kube-handover", "-i", "0.01")
	next, err := c.Start(c.Hosts[0].NS, "flannelu-host1-next", old.Args...)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitLeft(old.Proc); err != nil {
		t.Fatal(err)
	}
	last := stopPing(t, ping, 100)
	if lost := lostSeqs(ping, last); len(lost) > 0 {
		t.Errorf("%d of %d pings lost across the hand-over: %v", len(lost), last, lost)
	}
	if next.Exited() {
		t.Fatalf("the second flannelu exited:%s", testbed.Tail(next.Log, 10))
	}
	k.checkNodes(t, 1) // node 3 is gone (node deleted)
}

type kubeCluster struct {
	c       *testbed.Cluster
	backend string
	stack
}

// kubeConfig is net-conf.json for the stack: kube-flannel's, with the
// IPv6 fields flanneld v0.28 reads for dual stack.
func (s stack) kubeConfig(backend string) string {
	v6 := ""
	if s.v6 {
		v6 = fmt.Sprintf(`,"EnableIPv6":true,"IPv6Network":%q`, overlay6)
	}
	return fmt.Sprintf(`{"Network":"198.18.0.0/16"%s,"Backend":{"Type":%q}}`, v6, backend)
}

// newKubeCluster registers three nodes with podCIDRs of the stack's
// families (testbed.PodCIDR, PodCIDRv6), runs flannelu on each and puts
// two pods on each through the manifest's CNI chain. The IPv4 clusters
// have a fourth host, for the late node.
func newKubeCluster(t *testing.T, backend string, st stack) *kubeCluster {
	t.Helper()
	short := map[string]string{"udp": "ku", "vxlan": "kv", "host-gw": "kh", "ipip": "ki"}[backend] + st.suffix()
	hosts := map[bool]int{false: 4, true: 3}[st.v6]
	c := newClusterWith(t, testbed.ClusterOptions{
		Bed:    testbed.Options{Name: "e2e-" + short, Hosts: hosts, IPv6: st.v6},
		Config: st.kubeConfig(backend),
		Kube:   true,
	})
	k := &kubeCluster{c: c, backend: backend, stack: st}
	for i := 1; i <= 3; i++ {
		registered := time.Now()
		n, err := c.JoinNode(i, "--ip-masq") // as the manifest's DaemonSet runs it
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 && backend != "udp" && backend != "ipip" { // udp's (and userspace ipip's) routes are inside flannelu
			if err := routed(c, testbed.PodCIDR(3), true, 1, 2); err != nil {
				t.Fatal(err)
			}
			t.Logf("node 3 registered with its podCIDR, flannelu started on it -> its route on every peer: %v",
				time.Since(registered).Round(time.Millisecond))
		}
		if err := n.AddCNIPods(2); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[2].Pods[1].Addr)
	return k
}

// checkAnnotations reads every node back: exactly flanneld's annotations
// for the backend, the NetworkUnavailable condition flanneld sets, and
// the node's podCIDR in subnet.env.
func (k *kubeCluster) checkAnnotations(t *testing.T) { k.checkNodes(t, 1, 2, 3) }

// checkNodes is checkAnnotations for the given nodes.
func (k *kubeCluster) checkNodes(t *testing.T, nodes ...int) {
	mtu := map[string]int{"udp": 1472, "vxlan": 1450, "host-gw": 1500, "ipip": 1480}[k.backend]
	for _, i := range nodes {
		n, err := k.c.KubeNode(i)
		if err != nil {
			t.Fatal(err)
		}
		want, err := k.wantAnnotations(i)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(n.Annotations) != fmt.Sprint(want) {
			t.Errorf("node %d annotations:\n  %v\nwant exactly flanneld's\n  %v", i, n.Annotations, want)
		}
		if err := flannelIsUp(n); err != nil {
			t.Errorf("node %d: %v", i, err)
		}
		env := k.c.Nodes[i].Env
		if env.Subnet != testbed.PodCIDR(i) || env.Network != overlay || env.MTU != mtu {
			t.Errorf("node %d subnet.env: subnet %v network %v MTU %d, want %s %s %d", i, env.Subnet, env.Network, env.MTU, testbed.PodCIDR(i), overlay, mtu)
		}
		var sn6, net6 netip.Prefix // none without IPv6
		if k.v6 {
			sn6, net6 = testbed.PodCIDRv6(i), overlay6
		}
		if env.IPv6Subnet != sn6 || env.IPv6Network != net6 {
			t.Errorf("node %d subnet.env: IPv6 subnet %v network %v, want %v %v", i, env.IPv6Subnet, env.IPv6Network, sn6, net6)
		}
	}
}

// wantAnnotations are flanneld's annotations for host i with the backend
// (in dual stack flanneld v0.28's, with backend-v6-data and public-ipv6),
// and kubelet's.
func (k *kubeCluster) wantAnnotations(i int) (map[string]string, error) {
	h := k.c.Hosts[i-1]
	p := "flannel.alpha.coreos.com/"
	want := map[string]string{p + "kube-subnet-manager": "true", p + "public-ip": h.Addr.String(), p + "backend-data": "null",
		testbed.KubeletAnnotation: "true"} // kubelet's, left alone
	switch k.backend {
	case "udp":
		want[p+"backend-type"] = "" // flanneld's udp backend names no type
	case "host-gw":
		want[p+"backend-type"] = "host-gw"
	case "vxlan":
		want[p+"backend-type"] = "vxlan"
	case "ipip":
		want[p+"backend-type"] = "ipip"
	}
	if k.v6 { // flanneld v0.28's dual stack: the IPv6 side of the lease
		want[p+"public-ipv6"], want[p+"backend-v6-data"] = h.Addr6.String(), "null"
	}
	if k.backend == "vxlan" {
		for key, dev := range map[string]string{"backend-data": "flannel.1", "backend-v6-data": "flannel-v6.1"} {
			if _, ok := want[p+key]; !ok {
				continue
			}
			mac, err := linkMAC(h, dev)
			if err != nil {
				return nil, err
			}
			want[p+key] = fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac)
		}
	}
	return want, nil
}

func flannelIsUp(n *v1.Node) error {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable && c.Status == v1.ConditionFalse && c.Reason == "FlannelIsUp" {
			return nil
		}
	}
	return fmt.Errorf("no NetworkUnavailable=False (FlannelIsUp) condition: %+v", n.Status.Conditions)
}

// checkAPIServerRestart stops and starts the API server during a 100
// pings/s stream between two nodes: no packet lost, no flannelu exits,
// no route removed.
func (k *kubeCluster) checkAPIServerRestart(t *testing.T) {
	c := k.c
	to := c.Hosts[1].Pods[1].Addr.String()
	ping, err := c.Start(c.Hosts[0].Pods[0].NS, "ping-apiserver-"+k.backend, "ping", "-n", "-i", "0.01", "-c", "100000", "-W", "1", to)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitAnswered(ping, 100); err != nil { // the stream runs before the restart
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.KubeAPI.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.KubeAPI.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(start)
	// and 100 more replies after it, while the informers catch up
	if b, err := os.ReadFile(ping.Log); err != nil {
		t.Fatal(err)
	} else if err := waitAnswered(ping, lastAnswered(b)+100); err != nil {
		t.Fatal(err)
	}
	ping.Signal(syscall.SIGINT) // ping ends at once, its last request maybe unanswered yet
	if exited, _ := ping.Wait(10 * time.Second); !exited {
		t.Fatal("ping did not end on SIGINT")
	}
	out, _ := os.ReadFile(ping.Log)
	last, lost := echoGaps(out)
	if last < 100 || len(lost) > 0 {
		t.Errorf("ping across the API server restart: %d answered up to icmp_seq %d, lost %v", last-len(lost), last, lost)
	} else {
		t.Logf("API server stopped and ready again in %v under %d pings at 10 ms: none lost", restarted.Round(time.Millisecond), last)
	}
	for i := 1; i <= 3; i++ {
		if c.Nodes[i].Proc.Exited() {
			t.Errorf("flannelu on host %d exited across the API server restart:%s", i, testbed.Tail(c.Nodes[i].Proc.Log, 10))
		}
	}
	if k.backend != "udp" { // udp's routes are in flannelu, which the stream above went through
		for i := 1; i <= 3; i++ {
			for j := 1; j <= 3; j++ {
				if i != j && !hasRoute(c.Hosts[i-1], testbed.PodCIDR(j)) {
					t.Errorf("host %d lost its route to %s across the API server restart", i, testbed.PodCIDR(j))
				}
			}
		}
		k.checkRecovered(t, start)
	}
}

// checkRecovered registers a peer node (on an unused underlay address,
// with the cluster's backend) as soon as the restarted API server is
// ready, and waits for its route on every host: the time from the kill
// is the cluster's recovery time, the API server back and every
// flannelu's node watch working again. The node is deleted after, and its
// routes go.
func (k *kubeCluster) checkRecovered(t *testing.T, killed time.Time) {
	c, sn, p := k.c, testbed.PodCIDR(99), "flannel.alpha.coreos.com/"
	ann := map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": k.backend,
		p + "backend-data": "null", p + "public-ip": "192.0.2.99"}
	if k.backend == "vxlan" {
		ann[p+"backend-data"] = `{"VNI":1,"VtepMAC":"02:00:00:00:00:99"}`
	}
	probe := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fu-recovery-probe", Annotations: ann},
		Spec: v1.NodeSpec{PodCIDR: sn.String(), PodCIDRs: []string{sn.String()}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := c.KubeAdmin.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := routed(c, sn, true, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server killed -> restarted -> a node registered then is routed on every peer: %v (recovery time)",
		time.Since(killed).Round(time.Millisecond))
	if err := nodes.Delete(ctx, probe.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := routed(c, sn, false, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
}

// echoGaps reads ping's per-reply lines: the highest icmp_seq answered
// and the sequence numbers below it that got no answer. The requests
// after the last answer are not counted lost: ping was stopped while they
// were on their way.
func echoGaps(out []byte) (last int, lost []int) {
	answered := testbed.PingReplies(out)
	for seq := range answered {
		last = max(last, seq)
	}
	for seq := 1; seq < last; seq++ {
		if !answered[seq] {
			lost = append(lost, seq)
		}
	}
	return last, lost
}

var (
	logNodeAbsent = regexp.MustCompile(`msg="node not found in the API server`)
	logNoPodCIDR  = regexp.MustCompile(`msg="node has no podCIDR yet: waiting for one. Fix: run kube-controller-manager with --allocate-node-cidrs=true .*" node=\S+`)
)

// checkLateNode starts flannelu on host 4 before its node exists, then
// registers the node without a podCIDR, then assigns one: flannelu says
// what it waits for, once each, and the peers reach host 4's pod soon
// after the podCIDR is set. The time from the podCIDR to routes on every
// peer is logged.
func (k *kubeCluster) checkLateNode(t *testing.T) {
	c := k.c
	n4, err := c.LaunchNode(4, "--ip-masq")
	if err != nil {
		t.Fatal(err)
	}
	if err := n4.Proc.WaitLog(logNodeAbsent, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateNode(4); err != nil {
		t.Fatal(err)
	}
	if err := n4.Proc.WaitLog(logNoPodCIDR, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	patch := fmt.Sprintf(`{"spec":{"podCIDR":"%s","podCIDRs":["%[1]s"]}}`, testbed.PodCIDR(4))
	assigned := time.Now()
	if _, err := c.KubeAdmin.CoreV1().Nodes().Patch(ctx, c.Hosts[3].Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if k.backend != "udp" {
		if err := routed(c, testbed.PodCIDR(4), true, 1, 2, 3); err != nil {
			t.Fatal(err)
		}
		t.Logf("podCIDR assigned -> route on every peer: %v", time.Since(assigned).Round(time.Millisecond))
	}
	if err := n4.WaitEnv(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := n4.AddCNIPods(1); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		waitPing(t, c.Hosts[i-1].Pods[0], c.Hosts[3].Pods[0].Addr)
	}
	t.Logf("podCIDR assigned -> every peer's pod reached the new node's pod: %v", time.Since(assigned).Round(time.Millisecond))
	b, _ := os.ReadFile(n4.Proc.Log)
	if a, p := len(logNodeAbsent.FindAll(b, -1)), len(logNoPodCIDR.FindAll(b, -1)); a != 1 || p != 1 {
		t.Errorf("host 4 logged 'node not found' %d times and 'no podCIDR' %d times, want once each:%s", a, p, testbed.Tail(n4.Proc.Log, 20))
	}
	fullMesh(t, allPods(c, 1, 2, 3, 4))
}

// checkNodeDeleted deletes host 3's Node: its flannelu exits saying its
// lease is lost, and every other host drops its route.
func (k *kubeCluster) checkNodeDeleted(t *testing.T) {
	c := k.c
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deleted := time.Now()
	if err := c.KubeAdmin.CoreV1().Nodes().Delete(ctx, c.Hosts[2].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gone := testbed.PodCIDR(3)
	err := testbed.Eventually(20*time.Second, func() error {
		for _, i := range []int{1, 2, 4} {
			if k.backend == "udp" {
				if err := unreachable(c.Hosts[i-1].Pods[0], c.Hosts[2].Pods[0].Addr); err != nil {
					return fmt.Errorf("host %d: %w", i, err)
				}
			} else if hasRoute(c.Hosts[i-1], gone) {
				return fmt.Errorf("host %d still routes %s", i, gone)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node deleted -> its routes gone from every peer: %v", time.Since(deleted).Round(time.Millisecond))
	n3 := c.Nodes[3]
	if exited, _ := n3.Proc.Wait(20 * time.Second); !exited {
		t.Errorf("flannelu on host 3 still runs after its node was deleted")
	}
	if b, _ := os.ReadFile(n3.Proc.Log); !strings.Contains(string(b), "lease lost") {
		t.Errorf("flannelu on host 3 did not say its lease was lost:%s", testbed.Tail(n3.Proc.Log, 5))
	}
	// What host 3's flannelu programmed for its peers went before it
	// exited: the kernel backends' routes, udp's flannel0 with the
	// network's route.
	h3 := c.Hosts[2]
	for _, i := range []int{1, 2, 4} {
		if hasRoute(h3, testbed.PodCIDR(i)) {
			t.Errorf("host 3 still routes node %d's %s after its node was deleted", i, testbed.PodCIDR(i))
		}
	}
	if out, err := h3.Run("ip", "-o", "link", "show", "flannel0"); err == nil {
		t.Errorf("host 3 still has flannel0 after its node was deleted: %s%s", out, h3.MustRun("ip", "route"))
	}
	fullMesh(t, allPods(c, 1, 2, 4))
}

// routed waits until each of the hosts has a route for exactly sn (want)
// or has none (!want).
func routed(c *testbed.Cluster, sn netip.Prefix, want bool, hosts ...int) error {
	return testbed.Eventually(20*time.Second, func() error {
		for _, i := range hosts {
			if hasRoute(c.Hosts[i-1], sn) != want {
				return fmt.Errorf("host %d: a route for %s: %v, want %v", i, sn, !want, want)
			}
		}
		return nil
	})
}

// hasRoute reports whether h has a route for exactly p.
func hasRoute(h *testbed.Host, p netip.Prefix) bool {
	var routes []struct{ Dst string }
	return ipJSON(h, &routes, "ip", "-j", "route", "show", p.String()) == nil && len(routes) > 0
}

// unreachable checks that from gets flannelu's net unreachable for to.
func unreachable(from *testbed.Pod, to netip.Addr) error {
	out, err := from.Run("ping", "-n", "-c", "1", "-W", "1", to.String())
	if !strings.Contains(out, "Destination Net Unreachable") {
		return fmt.Errorf("ping %s: want 'Destination Net Unreachable', got %v:\n%s", to, err, out)
	}
	return nil
}
