// Command demo shows flannelu's main job on one machine: three hosts in
// network namespaces on one underlay bridge, a real etcd, flannelu on each
// host, two pods per host made by the real CNI chain (cnitool with
// flannel's conflist: the flannel plugin, bridge, host-local), and traffic
// between pods of different hosts. With -store kube the same cluster runs
// in Kubernetes mode: a real kube-apiserver on that etcd with
// deploy/kube-flannelu.yml applied, the three Node objects registered
// with podCIDRs as kube-controller-manager assigns them, flannelu with
// --kube-subnet-mgr as flannel's service account, and the pods made with
// the manifest's cni-conf.json. It removes everything when it ends, pods
// with CNI DEL, also when SIGINT or SIGTERM ends it at any step (exit
// status 130 or 143), and at start what an earlier run killed outright
// left behind. Root only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	v1 "k8s.io/api/core/v1"

	"github.com/flannelu/flannelu/subnet/kube"
	"github.com/flannelu/flannelu/testbed"
)

func main() {
	bin := flag.String("flannelu", "bin/flannelu", "the flannelu binary")
	backendType := flag.String("backend", "udp", "backend: udp, vxlan or host-gw")
	seconds := flag.Int("iperf-seconds", 3, "length of the iperf3 run")
	cni := flag.Bool("cni", true, "create pods with CNI ADD through flannel's conflist (false: wire them by hand)")
	store := flag.String("store", "etcd", "where the leases live: etcd, or kube (a real kube-apiserver; make demo-kube builds it and runs this)")
	flag.Parse()
	if *store != "etcd" && *store != "kube" {
		fmt.Fprintf(os.Stderr, "demo: -store %q: etcd or kube\n", *store)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces)")
		os.Exit(1)
	}
	in := newInterrupt()
	err := demo(in, *bin, *backendType, *seconds, *cni, *store == "kube")
	if code := in.exitCode(); code != 0 {
		os.Exit(code) // the step in progress failed because of the teardown
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func demo(in *interrupt, bin, backendType string, iperfSeconds int, cni, kube bool) error {
	config := fmt.Sprintf(`{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":%q}}`, backendType)
	// What an earlier run killed before its teardown (SIGKILL, a crash)
	// left behind: its namespaces, their processes, its directory.
	for _, r := range testbed.SweepStale() {
		fmt.Println("removed what an earlier run left:", r)
	}
	if kube {
		step("Building three hosts (192.0.2.1-3 on one bridge), starting etcd and kube-apiserver on 192.0.2.1, " +
			"applying deploy/kube-flannelu.yml")
	} else {
		step("Building three hosts (192.0.2.1-3 on one bridge) and starting etcd on 192.0.2.1")
	}
	c, err := testbed.NewCluster(testbed.ClusterOptions{
		Bed:      testbed.Options{Name: "demo", Hosts: 3},
		Flannelu: bin, Config: config, Kube: kube,
	})
	if err != nil {
		return err
	}
	servers := "etcd"
	if kube {
		servers = "kube-apiserver and etcd"
	}
	in.teardown = sync.OnceFunc(func() {
		step("Tearing down: CNI DEL of every pod, stopping flannelu, " + servers + ", removing every namespace and " + c.Dir)
		c.Close()
	})
	defer in.teardown()
	if !in.arm() {
		return errInterrupted // a signal came while the cluster was being built
	}
	fmt.Printf("logs and data in %s\n", c.Dir)
	if kube {
		fmt.Printf("API server %s; flannelu connects as %s (flannel's ClusterRole)\nnet-conf.json: %s\n",
			c.KubeAPI.URL, testbed.FlannelUser, config)
		step("Starting flannelu --kube-subnet-mgr on each host, once its Node is registered with a podCIDR " +
			"(as kubelet and kube-controller-manager --allocate-node-cidrs would)")
	} else {
		fmt.Printf("network config: %s\n", config)
		step("Starting flannelu on each host")
	}
	for i := 1; i <= 3; i++ {
		args := []string{}
		if cni {
			// As the kube-flannel DaemonSet runs flanneld: flannelu
			// masquerades traffic leaving the overlay, so the bridge
			// plugin does not (it would masquerade pod to pod as well).
			args = append(args, "--ip-masq")
		}
		if i == 1 && backendType == "udp" {
			args = append(args, "--trace", "--trace-rate", "20")
		}
		n, err := c.JoinNode(i, args...)
		if err != nil {
			return err
		}
		fmt.Printf("%s: lease %v, subnet.env:\n%s", n.Host.Name, n.Env.Subnet.Masked(), indent(readFile(n.SubnetFile)))
	}
	if kube {
		showNodes(c)
	} else {
		showLeases(c)
	}
	if err := addPods(c, cni); err != nil {
		return err
	}

	step("Pod-to-pod pings across hosts")
	pods := [][2]*testbed.Pod{
		{c.Hosts[0].Pods[0], c.Hosts[1].Pods[0]},
		{c.Hosts[1].Pods[1], c.Hosts[2].Pods[0]},
		{c.Hosts[2].Pods[1], c.Hosts[0].Pods[1]},
	}
	for _, p := range pods {
		if err := waitPing(p[0], p[1]); err != nil {
			return err
		}
		out, err := p[0].Run("ping", "-n", "-c", "3", "-i", "0.2", p[1].Addr.String())
		if err != nil {
			return fmt.Errorf("ping %s -> %s: %v\n%s", p[0].Addr, p[1].Addr, err, out)
		}
		fmt.Printf("%s (%s) -> %s (%s):\n%s", p[0].Addr, p[0].Name, p[1].Addr, p[1].Name, indent(pingSummary(out)))
	}

	step(fmt.Sprintf("iperf3, %d s, pod %s on host 1 -> pod %s on host 2", iperfSeconds, pods[0][0].Addr, pods[0][1].Addr))
	if err := iperf(c, pods[0][0], pods[0][1], iperfSeconds); err != nil {
		return err
	}
	if backendType == "udp" {
		showTrace(c)
		step("Counters on host 1 (/metrics)")
		m, err := c.Nodes[1].Metrics()
		if err != nil {
			return err
		}
		fmt.Print(indent(nonZeroSamples(m)))
	}
	fmt.Println("\nThe demo worked: pods on three hosts talked through flannelu.")
	return nil
}

// addPods puts two pods on each host, through the CNI chain as kubelet
// would or by hand, and shows what each got.
func addPods(c *testbed.Cluster, cni bool) error {
	if cni {
		conflist := testbed.FlannelConflist
		if c.KubeConflist != nil {
			conflist = string(c.KubeConflist) // the manifest's cni-conf.json
		}
		step("Two pods per host by CNI ADD: cnitool add cbr0 /run/netns/<pod>, with")
		fmt.Print(indent("/etc/cni/net.d/10-flannel.conflist = " + conflist))
	} else {
		step("Two pods per host, wired by hand behind cni0")
	}
	for i := 1; i <= 3; i++ {
		n := c.Nodes[i]
		add := n.AddPods
		if cni {
			add = n.AddCNIPods
		}
		if err := add(2); err != nil {
			return err
		}
		for _, p := range n.Host.Pods {
			route, _ := p.Run("ip", "-4", "route", "show", "default")
			fmt.Printf("  %s: %s, %s\n", p.Name, p.Addr, strings.TrimSpace(route))
		}
	}
	return nil
}

func iperf(c *testbed.Cluster, from, to *testbed.Pod, seconds int) error {
	srv, err := c.Start(to.NS, "iperf3-server", "iperf3", "-s", "-1", "-B", to.Addr.String())
	if err != nil {
		return err
	}
	// Wait for the listening socket without connecting to it: a probe
	// connection would be the one client "iperf3 -s -1" serves, and the
	// real run would then find nothing listening.
	if err := testbed.Eventually(10*time.Second, func() error {
		out, err := to.Run("ss", "-Hltn", "sport", "=", ":5201")
		if err == nil && !strings.Contains(out, "LISTEN") {
			err = fmt.Errorf("iperf3 server in %s not listening yet", to.Name)
		}
		return err
	}); err != nil {
		return err
	}
	out, err := from.Run("iperf3", "-c", to.Addr.String(), "-t", fmt.Sprint(seconds), "-f", "m")
	srv.Wait(5 * time.Second)
	if err != nil {
		return fmt.Errorf("iperf3: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "sender") || strings.Contains(line, "receiver") {
			fmt.Println(" ", strings.TrimSpace(line))
		}
	}
	return nil
}

func showLeases(c *testbed.Cluster) {
	step("Leases in etcd (flanneld's schema)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Client.Get(ctx, testbed.EtcdPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		fmt.Println("  (cannot read etcd:", err, ")")
		return
	}
	for _, kv := range resp.Kvs {
		fmt.Printf("  %s = %s\n", kv.Key, kv.Value)
	}
}

// showNodes prints what the API server holds: each Node's podCIDRs and
// the annotations flannelu published on it (flanneld's), and its
// NetworkUnavailable condition.
func showNodes(c *testbed.Cluster) {
	step("Nodes in the API server: podCIDRs and flannel's annotations")
	nodes := make([]*v1.Node, len(c.Hosts))
	// Each flannelu sets the condition just after subnet.env: wait for
	// all of them (or show what there is).
	testbed.Eventually(10*time.Second, func() (err error) { //nolint:errcheck // shown as it is
		for i := range nodes {
			if nodes[i], err = c.KubeNode(i + 1); err != nil {
				return err
			}
			if len(nodes[i].Status.Conditions) == 0 {
				return fmt.Errorf("%s: no condition yet", nodes[i].Name)
			}
		}
		return nil
	})
	for _, n := range nodes {
		if n == nil {
			fmt.Println("  (cannot read the nodes)")
			return
		}
		fmt.Printf("  %s: podCIDRs %v\n", n.Name, n.Spec.PodCIDRs)
		for _, k := range slices.Sorted(maps.Keys(n.Annotations)) {
			if strings.HasPrefix(k, kube.DefaultPrefix) {
				fmt.Printf("    %s: %q\n", k, n.Annotations[k])
			}
		}
		for _, cond := range n.Status.Conditions {
			fmt.Printf("    condition %s=%s (%s)\n", cond.Type, cond.Status, cond.Reason)
		}
	}
}

var traceRE = regexp.MustCompile(` (inside|outside) `)

func showTrace(c *testbed.Cluster) {
	step("Trace lines from host 1 (--trace): one per packet, rate-limited")
	var lines []string
	for _, l := range strings.Split(readFile(c.Nodes[1].Proc.Log), "\n") {
		if traceRE.MatchString(l) && !strings.Contains(l, "level=") {
			lines = append(lines, l)
		}
	}
	if len(lines) > 8 {
		lines = lines[:8]
	}
	fmt.Print(indent(strings.Join(lines, "\n") + "\n"))
}

func waitPing(from, to *testbed.Pod) error {
	return testbed.Eventually(15*time.Second, func() error {
		_, err := testbed.Ping(from.NS, to.Addr.String(), 1)
		return err
	})
}

func pingSummary(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "bytes from") || strings.Contains(l, "packet loss") || strings.HasPrefix(l, "rtt") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

func nonZeroSamples(metrics string) string {
	var keep []string
	for _, l := range strings.Split(metrics, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") && !strings.HasSuffix(l, " 0") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

var errInterrupted = errors.New("interrupted")

// interrupt makes SIGINT and SIGTERM end the demo at any step with one
// teardown, waited for, and exit status 128+signal (130, 143). The first
// signal tears the cluster down at once, so the step in progress (an
// iperf3 run, a wait for a ping) fails soon; main then waits for the same
// teardown (sync.OnceFunc: a second caller blocks until the first
// returns) and exits. A signal while the cluster is being built takes
// effect when NewCluster returns. Later signals are reported and ignored,
// so the teardown is never cut short.
type interrupt struct {
	teardown func() // set once the cluster exists

	mu    sync.Mutex
	sig   syscall.Signal // the first signal; 0 before
	armed bool           // teardown is set: a signal runs it
}

func newInterrupt() *interrupt {
	in := &interrupt{}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go in.watch(ch)
	return in
}

func (in *interrupt) watch(ch <-chan os.Signal) {
	for s := range ch {
		in.mu.Lock()
		first, armed := in.sig == 0, in.armed
		if first {
			in.sig = s.(syscall.Signal)
		}
		in.mu.Unlock()
		switch {
		case !first:
			fmt.Printf("\n%v: still tearing down, please wait\n", s)
		case armed:
			fmt.Printf("\n%v: interrupted, tearing down\n", s)
			go func() { in.teardown(); os.Exit(in.exitCode()) }()
		default:
			fmt.Printf("\n%v: interrupted, tearing down once the step in progress returns\n", s)
		}
	}
}

// arm lets a signal run the teardown from now on; it reports false when
// a signal came before, and the caller returns at once.
func (in *interrupt) arm() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.armed = true
	return in.sig == 0
}

// exitCode is 128+signal once a signal came, else 0.
func (in *interrupt) exitCode() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sig == 0 {
		return 0
	}
	return 128 + int(in.sig)
}

func step(s string) { fmt.Printf("\n=== %s\n", s) }

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
