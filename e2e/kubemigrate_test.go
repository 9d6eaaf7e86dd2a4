package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flannelu/flannelu/handover/incumbent"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// TestKubeFlannelRollout replaces kube-flannel v0.28.9 (flanneld with
// --kube-subnet-mgr, on a real API server) by flannelu node by node, as
// the DaemonSet controller does with the manifest's maxSurge: on each node
// flannelu starts beside the running flanneld with the manifest's
// container args, in a PID namespace of its own (a pod without hostPID:
// it cannot see flanneld's process, only its health port), waits without
// touching the node, and the prober finds the health port answering (so
// the controller goes on and deletes the old pod); flanneld is stopped
// and flannelu takes over (within a second on an idle machine; at most
// takeOverBound), under a ping stream between the nodes' pods that loses
// nothing (vxlan, host-gw) or has a short gap (udp, whose device belongs
// to its process); then node 1 goes back to flanneld.
func TestKubeFlannelRollout(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	flanneld := flanneldBinaryOf(t, flanneldV028Bin)
	for _, backend := range []string{"vxlan", "udp", "host-gw"} {
		t.Run(backend, func(t *testing.T) { kubeFlannelRollout(t, flanneld, backend) })
	}
}

func kubeFlannelRollout(t *testing.T, flanneld, backend string) {
	c := newClusterWith(t, testbed.ClusterOptions{
		Bed:    testbed.Options{Name: "e2e-kroll-" + backend[:1], Hosts: 2},
		Config: ipv4.kubeConfig(backend),
		Kube:   true,
	})
	args := manifestArgs(t)
	port := "8081"
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--healthz-port="); ok {
			port = v
		}
	}
	flanneldArgs := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, "--after-handover") })
	k := &kubeCluster{c: c, backend: backend, stack: ipv4}
	m := &migration{backend: backend} // its loss rule: none for vxlan and host-gw, a gap of at most 1 s for udp
	procs := map[int]*testbed.Proc{}
	subnetFile := func(i int) string { return filepath.Join(c.Dir, c.Hosts[i-1].Name, "subnet.env") }
	nodeArgs := func(i int) []string {
		return []string{"--kubeconfig-file", c.Kubeconfig, "--net-config-path", c.NetConfPath, "--subnet-file", subnetFile(i)}
	}
	for i := 1; i <= 2; i++ {
		h := c.Hosts[i-1]
		if err := c.RegisterNode(i); err != nil {
			t.Fatal(err)
		}
		p, err := c.Start(h.NS, "flanneld-"+h.Name, append(append([]string{"env", "NODE_NAME=" + h.Name, flanneld}, flanneldArgs...), nodeArgs(i)...)...)
		if err != nil {
			t.Fatal(err)
		}
		procs[i] = p
		n := &testbed.Node{Host: h, Proc: p, SubnetFile: subnetFile(i)}
		if err := n.WaitEnv(eventDeadline); err != nil {
			t.Fatal(err)
		}
		c.Nodes[i] = n
		if _, err := h.UseCNI(c.KubeConflist, n.SubnetFile); err != nil {
			t.Fatal(err)
		}
		if err := h.CNI.AddPods(1); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr)
	for i := 1; i <= 2; i++ {
		t.Run(fmt.Sprintf("node %d", i), func(t *testing.T) {
			h, n := c.Hosts[i-1], c.Nodes[i]
			ping := startStampedPing(t, c, fmt.Sprintf("ping-rollout-%d", i))
			before := nodeState(t, h, n.SubnetFile)
			argv := append(append([]string{"env", "NODE_NAME=" + h.Name, "unshare", "--pid", "--fork", "--mount-proc", flannelu}, args...), nodeArgs(i)...)
			fu, err := c.Start(h.NS, "flannelu-"+h.Name, argv...)
			if err != nil {
				t.Fatal(err)
			}
			if err := fu.WaitLog(regexp.MustCompile(regexp.QuoteMeta(incumbent.Waiting)+`.*health port`), eventDeadline); err != nil {
				t.Fatal(err)
			}
			// The new pod's probes, on the node's address: answered.
			for _, path := range []string{"/healthz", "/readyz"} {
				if code, body, err := getIn(h, net.JoinHostPort(h.Addr.String(), port), path); err != nil || code != http.StatusOK {
					t.Errorf("%s while both run: %d %q %v", path, code, body, err)
				}
			}
			if after := nodeState(t, h, n.SubnetFile); after != before {
				t.Errorf("flannelu changed the node's network state while flanneld runs:\n%s", lineDiff(before, after))
			}
			if fu.Exited() {
				t.Fatalf("flannelu exited beside flanneld:%s", testbed.Tail(fu.Log, 10))
			}
			procs[i].Stop() //nolint:errcheck // the old pod deleted: its status does not matter
			stopped := time.Now()
			if err := fu.WaitLog(backendRunning, eventDeadline); err != nil {
				t.Fatal(err)
			}
			tookOver := logTime(t, fu.Log, "backend running", 1).Sub(stopped)
			out := stopStampedPing(t, ping)
			t.Logf("node %d: flannelu took over %v after flanneld exited; %s", i, tookOver.Round(time.Millisecond), out)
			// About 0.3 s idle (its wait polls every 100 ms), 1.8 s seen at
			// load 60: the bound tells a wait that stopped looking from a
			// busy machine; the lost pings are what a user sees.
			if tookOver > takeOverBound {
				t.Errorf("flannelu took over %v after flanneld exited, want at most %v", tookOver, takeOverBound)
			}
			m.checkOutage(t, out)
			// Its own readiness once it serves the port.
			if err := testbed.Eventually(eventDeadline, func() error {
				code, body, err := getIn(h, net.JoinHostPort(h.Addr.String(), port), "/readyz")
				if err == nil && (code != http.StatusOK || !strings.Contains(body, "backend: running")) {
					err = fmt.Errorf("/readyz %d %q", code, body)
				}
				return err
			}); err != nil {
				t.Error(err)
			}
			env, err := subnet.ReadEnv(n.SubnetFile)
			if err != nil {
				t.Fatal(err)
			}
			n.Env, n.Proc = env, fu
		})
	}
	t.Run("annotations and subnet.env as flanneld wrote them", func(t *testing.T) { k.checkNodes(t, 1, 2) })
	t.Run("pods reach each other", func(t *testing.T) { fullMesh(t, allPods(c, 1, 2)) })
	// Back to kube-flannel (its manifest has no maxSurge): flannelu's pod
	// stops, then flanneld's starts with the same args and subnet file,
	// and takes the node as flannelu leaves it.
	t.Run("rollback of node 1 to kube-flannel "+flanneldToday, func(t *testing.T) {
		h, n := c.Hosts[0], c.Nodes[1]
		ping := startStampedPing(t, c, "ping-rollback-kube")
		if err := n.Proc.Stop(); err != nil {
			t.Fatalf("flannelu on SIGTERM: %v%s", err, testbed.Tail(n.Proc.Log, 10))
		}
		started := time.Now()
		p, err := c.Start(h.NS, "flanneld-again-"+h.Name, append(append([]string{"env", "NODE_NAME=" + h.Name, flanneld}, flanneldArgs...), nodeArgs(1)...)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitLog(regexp.MustCompile(`\] Running backend\.`), eventDeadline); err != nil {
			t.Fatal(err)
		}
		ran := time.Since(started)
		out := stopStampedPing(t, ping)
		t.Logf("%s, Kubernetes mode: rollback to flanneld %s: %s (its Running backend line seen %v after its start)", backend, flanneldToday, out,
			ran.Round(time.Millisecond))
		if backend != "udp" && out.lost > 0 {
			t.Errorf("%d pings lost", out.lost)
		}
		if backend == "udp" && out.lost > 0 {
			running, err := klogTime(p.Log, "Running backend.")
			if err != nil {
				t.Fatal(err)
			}
			if late := out.back.Sub(running); late > rollbackSlack {
				t.Errorf("flanneld's backend ran, and the pods' traffic came back only %v later, want at most %v", late, rollbackSlack)
			}
		}
		n.Proc = p
		fullMesh(t, allPods(c, 1, 2))
		if p.Exited() {
			t.Fatalf("flanneld exited:%s", testbed.Tail(p.Log, 10))
		}
	})
}

// manifestArgs are the kube-flannel container's args in the manifest.
func manifestArgs(t *testing.T) []string {
	t.Helper()
	path, err := testbed.ManifestPath()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := testbed.ReadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, ci := range containers {
			c, _ := ci.(map[string]any)
			if c["name"] != "kube-flannel" {
				continue
			}
			args, _, _ := unstructured.NestedStringSlice(c, "args")
			return args
		}
	}
	t.Fatalf("no kube-flannel container in %s", path)
	return nil
}

// getIn fetches http://addr/path from inside h's namespace, as a kubelet
// probe on the node does.
func getIn(h *testbed.Host, addr, path string) (int, string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) { return h.Dial(ctx, a) },
	}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
