package testbed

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelu/flannelu/subnet"
)

// EtcdPrefix is flanneld's default prefix, which the cluster uses.
const EtcdPrefix = "/coreos.com/network"

// HealthPort is where every node's flannelu serves /healthz and /metrics.
const HealthPort = 9180

// ClusterOptions shape a flannelu cluster on a testbed.
type ClusterOptions struct {
	Bed      Options
	Flannelu string // path of the flannelu binary
	// Config is the network config JSON written to <prefix>/config, or to
	// net-conf.json in Kubernetes mode.
	Config string
	// EtcdMembers > 1 runs an etcd cluster of that many members, member
	// i on host i; default one etcd on host 1.
	EtcdMembers int
	// Kube runs the cluster in Kubernetes mode (flanneld's
	// --kube-subnet-mgr): a kube-apiserver next to etcd on host 1 with
	// deploy/kube-flannelu.yml applied, and every flannelu talking to it
	// as flannel's service account. The test registers the Node objects
	// (CreateNode), as kubelet and kube-controller-manager would.
	Kube bool
	// KubeAPIArgs are more kube-apiserver flags (Kube only).
	KubeAPIArgs []string
}

// Cluster is a testbed with etcd and the network config in place; nodes
// are started one by one with StartNode.
type Cluster struct {
	*Bed
	Opts   ClusterOptions
	Etcd   *Etcd   // the first member
	Member []*Etcd // every member (just Etcd unless EtcdMembers > 1)
	Client *clientv3.Client
	Nodes  map[int]*Node // by host index

	// Kubernetes mode only: the API server, an admin client, and the
	// files every flannelu reads.
	KubeAPI      *KubeAPIServer
	KubeAdmin    *kubernetes.Clientset
	Kubeconfig   string
	NetConfPath  string
	KubeConflist []byte // the manifest's cni-conf.json, for the pods' CNI chain
}

// Node is flannelu running on one host.
type Node struct {
	Host       *Host
	Proc       *Proc
	SubnetFile string
	Env        subnet.Env // as read after start
	Args       []string
	cluster    *Cluster
}

// NewCluster builds the testbed, starts etcd and writes the config.
func NewCluster(opts ClusterOptions) (c *Cluster, err error) {
	bed, err := New(opts.Bed)
	if err != nil {
		return nil, err
	}
	built := &Cluster{Bed: bed, Opts: opts, Nodes: map[int]*Node{}}
	c = built
	defer func() {
		if err != nil {
			built.Close() // c is nil by now: the error returns set it
		}
	}()
	if opts.EtcdMembers > 1 {
		if c.Member, err = bed.StartEtcdMembers(opts.EtcdMembers); err != nil {
			return nil, err
		}
		c.Etcd = c.Member[0]
		c.Client, err = MembersClient(c.Member)
	} else {
		if c.Etcd, err = bed.StartEtcd(); err != nil {
			return nil, err
		}
		c.Member = []*Etcd{c.Etcd}
		c.Client, err = c.Etcd.Client()
	}
	if err != nil {
		return nil, err
	}
	if opts.Kube {
		return c, c.startKube()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err = c.Client.Put(ctx, EtcdPrefix+"/config", opts.Config); err != nil {
		return nil, fmt.Errorf("write network config: %w", err)
	}
	return c, nil
}

// Close stops the nodes and etcd and removes the testbed.
func (c *Cluster) Close() {
	if c.Client != nil {
		c.Client.Close()
	}
	c.Bed.Close()
}

// StartNode starts flannelu on host i (1-based) with the cluster's store,
// and waits until it has written subnet.env.
func (c *Cluster) StartNode(i int, extra ...string) (*Node, error) {
	n, err := c.LaunchNode(i, extra...)
	if err != nil {
		return nil, err
	}
	if err := n.WaitEnv(60 * time.Second); err != nil {
		return nil, err
	}
	return n, nil
}

// LaunchNode starts flannelu on host i without waiting for it: in
// Kubernetes mode it may wait for its node or its podCIDR.
func (c *Cluster) LaunchNode(i int, extra ...string) (*Node, error) {
	h := c.Hosts[i-1]
	n := &Node{Host: h, cluster: c, SubnetFile: filepath.Join(c.Dir, h.Name, "subnet.env")}
	os.Remove(n.SubnetFile)
	n.Args = []string{c.Opts.Flannelu, "--etcd-endpoints", c.EtcdEndpoints()}
	if c.Opts.Kube {
		// NODE_NAME, as the DaemonSet's downward API would set it.
		n.Args = []string{"env", "NODE_NAME=" + h.Name, c.Opts.Flannelu, "--kube-subnet-mgr",
			"--kubeconfig-file", c.Kubeconfig, "--net-config-path", c.NetConfPath}
	}
	n.Args = append(n.Args,
		"--subnet-file", n.SubnetFile,
		"--healthz-port", strconv.Itoa(HealthPort),
		"--healthz-ip", h.Addr.String())
	n.Args = append(n.Args, extra...)
	var err error
	if n.Proc, err = c.Start(h.NS, "flannelu-"+h.Name, n.Args...); err != nil {
		return nil, err
	}
	c.Nodes[i] = n
	return n, nil
}

// EtcdEndpoints lists every member's client URL, comma-separated, as
// --etcd-endpoints takes them.
func (c *Cluster) EtcdEndpoints() string {
	var eps []string
	for _, m := range c.Member {
		eps = append(eps, m.Endpoint)
	}
	return strings.Join(eps, ",")
}

// WaitEnv waits until the node's flannelu has written subnet.env, and
// reads it into Env.
func (n *Node) WaitEnv(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		env, err := subnet.ReadEnv(n.SubnetFile)
		if err == nil {
			n.Env = env
			return nil
		}
		if n.Proc.Exited() {
			return fmt.Errorf("flannelu on %s exited before writing subnet.env: %s", n.Host.Name, Tail(n.Proc.Log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flannelu on %s wrote no subnet.env in %v: %s", n.Host.Name, timeout, Tail(n.Proc.Log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the node's flannelu with SIGTERM (a clean shutdown).
func (n *Node) Stop() error {
	return n.Proc.Stop()
}

// AddPods puts n pods behind the node's cni0, as the CNI plugin would from
// subnet.env: the bridge takes the subnet's first address (FLANNEL_SUBNET,
// and FLANNEL_IPV6_SUBNET when the network has IPv6), each pod the next
// free ones.
func (n *Node) AddPods(count int) error {
	var gateways []netip.Prefix
	for _, sn := range []netip.Prefix{n.Env.Subnet, n.Env.IPv6Subnet} {
		if sn.IsValid() {
			gateways = append(gateways, netip.PrefixFrom(sn.Masked().Addr().Next(), sn.Bits()))
		}
	}
	return n.Host.AddPodsFamilies(count, n.Env.MTU, gateways...)
}

// AddCNIPods creates count pods on the node through the real CNI chain
// (FlannelConflist, or in Kubernetes mode the manifest's cni-conf.json,
// reading the node's subnet.env), as kubelet would.
func (n *Node) AddCNIPods(count int) error {
	if n.Host.CNI == nil {
		conflist := []byte(FlannelConflist)
		if n.cluster.KubeConflist != nil {
			conflist = n.cluster.KubeConflist
		}
		if _, err := n.Host.UseCNI(conflist, n.SubnetFile); err != nil {
			return err
		}
	}
	return n.Host.CNI.AddPods(count)
}

// Metrics fetches the node's /metrics text.
func (n *Node) Metrics() (string, error) {
	return n.get("/metrics")
}

// Metric returns one sample's value from /metrics, 0 when absent. name
// includes the labels exactly as printed, e.g.
// `flannelu_dropped_packets_total{direction="outside",reason="unknown_peer"}`.
func (n *Node) Metric(name string) (float64, error) {
	text, err := n.Metrics()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

func (n *Node) get(path string) (string, error) {
	code, body, err := n.Get(path)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	return body, err
}

// Get fetches a path of the node's health server (/readyz, /metrics) and
// returns the status code and body, whatever the code.
func (n *Node) Get(path string) (code int, body string, err error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return n.Host.Dial(ctx, addr) },
	}}
	resp, err := client.Get("http://" + ListenAddr(n.Host.Addr, HealthPort) + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Tail returns the last n lines of a log file, for failure messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n" + strings.Join(lines, "\n")
}

// Eventually retries fn every 100ms until it succeeds or timeout passes,
// returning the last error.
func Eventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pingWait bounds one Ping run: the requests, 10 ms apart, and the wait
// for their replies on a loaded machine.
const pingWait = 10 * time.Second

// pingReply is ping's line for an echo reply (not "From ... icmp_seq=N
// Destination Net Unreachable", nor a duplicate), with ping -D's
// "[seconds.micros] " before it or not.
var pingReply = regexp.MustCompile(`(?m)^(?:\[\d+\.\d+\] )?\d+ bytes from \S+ icmp_seq=(\d+) [^\n]*ms$`)

// Ping sends count echo requests 10 ms apart from a namespace and fails
// unless each of them is answered. A reply may take its time: ping's -W
// only bounds the wait when no reply came at all (after one, ping waits
// two round trips past its last request, 10 ms here), so on a loaded
// machine a late reply would read as a lost one. With -w, ping sends
// until count replies are in (at most pingWait); replies come back in
// order, so requests 1..count all answered means none was lost.
func Ping(from NS, to string, count int) (string, error) {
	out, err := from.Run("ping", "-n", "-c", strconv.Itoa(count), "-i", "0.01",
		"-w", strconv.Itoa(int(pingWait/time.Second)), to)
	answered := PingReplies([]byte(out))
	for seq := 1; seq <= count; seq++ {
		if !answered[seq] {
			return out, fmt.Errorf("ping %s: request %d of %d not answered (%v)", to, seq, count, err)
		}
	}
	return out, nil
}

// PingReplies returns the sequence numbers of the echo requests that ping's
// output (without -q) shows answered.
func PingReplies(out []byte) map[int]bool {
	seqs := map[int]bool{}
	for _, m := range pingReply.FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		seqs[n] = true
	}
	return seqs
}
