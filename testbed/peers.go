package testbed

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelu/flannelu/subnet"
)

// Peers writes fake peer hosts into a cluster's store exactly as flanneld
// v0.28.9 publishes itself: etcd leases (a key under <prefix>/subnets/ on
// an etcd lease of 24 h, flanneld's JSON), or Kubernetes Node objects as
// kubelet registers them (labels, a realistic status with images) with the
// podCIDR kube-controller-manager assigns and the annotations flanneld
// patches. No process stands behind them: they exist for the control plane
// of the hosts that watch them, which program a route (and, for vxlan, a
// neighbour and an fdb entry) for each.
type Peers struct {
	Store   string // "etcd" or "kube"
	Backend string // udp, vxlan or host-gw: the lease's BackendType and data
	// Network and SubnetLen place peer i's subnet: the i-th subnet of
	// that length in Network (i from 1).
	Network   netip.Prefix
	SubnetLen int
	Etcd      *clientv3.Client      // Store "etcd"
	Prefix    string                // etcd prefix; default EtcdPrefix
	Kube      *kubernetes.Clientset // Store "kube", an admin client
	// Workers is how many requests run at once in CreateAll and
	// DeleteAll; default 16.
	Workers int
	made    int // peers Next handed out
}

// Next returns the next n peers never handed out before (from peer 1):
// a later join never reuses a subnet of the run.
func (g *Peers) Next(n int) []Peer {
	out := make([]Peer, n)
	for i := range out {
		g.made++
		out[i] = g.Peer(g.made)
	}
	return out
}

// Made returns every peer Next handed out, for a clean-up.
func (g *Peers) Made() []Peer {
	out := make([]Peer, g.made)
	for i := range out {
		out[i] = g.Peer(i + 1)
	}
	return out
}

// Restart makes Next start from peer 1 again.
func (g *Peers) Restart() { g.made = 0 }

// Peer is one fake host.
type Peer struct {
	Index    int
	Name     string // the Node's name, peer-<index>
	Subnet   netip.Prefix
	PublicIP netip.Addr
	VtepMAC  net.HardwareAddr
	// Generation changes the public IP and MAC: Change writes it.
	Generation int
}

// PeerPublicIPs is where the fake peers' public IPs are: 192.0.2.100 to
// .253 on the underlay, so that host-gw's routes via them are on-link.
// Peers share them; no packet is ever sent to one.
const (
	peerIPFirst = 100
	peerIPCount = 154
)

// Peer returns peer i (from 1): its subnet, public IP and VTEP MAC.
func (g *Peers) Peer(i int) Peer {
	p := Peer{Index: i, Name: fmt.Sprintf("peer-%05d", i), Subnet: g.SubnetAt(i)}
	g.setGeneration(&p, 0)
	return p
}

// SubnetAt is the i-th subnet of SubnetLen in Network.
func (g *Peers) SubnetAt(i int) netip.Prefix {
	base := g.Network.Masked().Addr().As4()
	n := binary.BigEndian.Uint32(base[:]) + uint32(i)<<(32-g.SubnetLen)
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], n)
	return netip.PrefixFrom(netip.AddrFrom4(a), g.SubnetLen)
}

// Subnets is how many subnets of SubnetLen Network holds.
func (g *Peers) Subnets() int { return 1 << (g.SubnetLen - g.Network.Bits()) }

func (g *Peers) setGeneration(p *Peer, gen int) {
	p.Generation = gen
	p.PublicIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(peerIPFirst + (p.Index+gen)%peerIPCount)})
	p.VtepMAC = net.HardwareAddr{0x0e, byte(gen), byte(p.Index >> 16), byte(p.Index >> 8), byte(p.Index), 0x01}
}

// Changed returns p with another public IP and VTEP MAC.
func (g *Peers) Changed(p Peer) Peer {
	g.setGeneration(&p, p.Generation+1)
	return p
}

// Attrs is the lease p publishes, as flanneld v0.28.9's backend writes it.
func (g *Peers) Attrs(p Peer) subnet.LeaseAttrs {
	a := subnet.LeaseAttrs{PublicIP: p.PublicIP}
	switch g.Backend {
	case "vxlan":
		a.BackendType = "vxlan"
		a.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, p.VtepMAC))
	case "host-gw":
		a.BackendType = "host-gw"
	}
	return a
}

// Key is p's etcd key.
func (g *Peers) Key(p Peer) string {
	return g.prefix() + "/subnets/" + subnet.MakeSubnetKey(p.Subnet, netip.Prefix{})
}

func (g *Peers) prefix() string {
	if g.Prefix == "" {
		return EtcdPrefix
	}
	return g.Prefix
}

// Create registers p: an etcd lease, or a Node.
func (g *Peers) Create(ctx context.Context, p Peer) error {
	if g.Store == "kube" {
		_, err := g.Kube.CoreV1().Nodes().Create(ctx, g.node(p), metav1.CreateOptions{})
		return err
	}
	value, err := subnet.MarshalLeaseAttrs(g.Attrs(p))
	if err != nil {
		return err
	}
	lease, err := g.Etcd.Grant(ctx, int64((24 * time.Hour).Seconds()))
	if err != nil {
		return err
	}
	_, err = g.Etcd.Put(ctx, g.Key(p), string(value), clientv3.WithLease(lease.ID))
	return err
}

// Change rewrites p's published lease (its public IP and MAC as p has
// them now): the etcd value, or the Node's annotations as flanneld
// patches them.
func (g *Peers) Change(ctx context.Context, p Peer) error {
	if g.Store == "kube" {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": g.annotations(p)}})
		if err != nil {
			return err
		}
		_, err = g.Kube.CoreV1().Nodes().Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	}
	value, err := subnet.MarshalLeaseAttrs(g.Attrs(p))
	if err != nil {
		return err
	}
	resp, err := g.Etcd.Get(ctx, g.Key(p))
	if err != nil {
		return err
	}
	var opts []clientv3.OpOption
	if len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(resp.Kvs[0].Lease)))
	}
	_, err = g.Etcd.Put(ctx, g.Key(p), string(value), opts...)
	return err
}

// Delete removes p (a node deleted, an expired lease).
func (g *Peers) Delete(ctx context.Context, p Peer) error {
	if g.Store == "kube" {
		err := g.Kube.CoreV1().Nodes().Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	_, err := g.Etcd.Delete(ctx, g.Key(p))
	return err
}

// CreateAll creates peers with Workers requests at a time.
func (g *Peers) CreateAll(ctx context.Context, peers []Peer) error {
	return g.each(ctx, peers, g.Create)
}

// ChangeAll rewrites peers' leases (Change) with Workers requests at a
// time: after a change of Backend, every peer publishes the new type.
func (g *Peers) ChangeAll(ctx context.Context, peers []Peer) error {
	return g.each(ctx, peers, g.Change)
}

// DeleteAll deletes peers with Workers requests at a time.
func (g *Peers) DeleteAll(ctx context.Context, peers []Peer) error {
	return g.each(ctx, peers, g.Delete)
}

func (g *Peers) each(ctx context.Context, peers []Peer, do func(context.Context, Peer) error) error {
	workers := g.Workers
	if workers <= 0 {
		workers = 16
	}
	next := make(chan Peer)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if err := do(ctx, p); err != nil {
					errc <- fmt.Errorf("%s: %w", p.Name, err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for _, p := range peers {
		select {
		case next <- p:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

// annotations are flanneld v0.28.9's annotations of p (IPv4 network):
// backend-data is JSON null for udp and host-gw, backend-type empty for
// udp, whose lease has no BackendType.
func (g *Peers) annotations(p Peer) map[string]string {
	a := g.Attrs(p)
	data := "null"
	if a.BackendData != nil {
		data = string(a.BackendData)
	}
	const prefix = "flannel.alpha.coreos.com/"
	return map[string]string{
		prefix + "kube-subnet-manager": "true",
		prefix + "backend-type":        a.BackendType,
		prefix + "backend-data":        data,
		prefix + "public-ip":           p.PublicIP.String(),
	}
}

// node is p's Node as a cluster holds it: kubelet's labels, annotations
// and status (conditions, addresses, capacity, node info and the images
// it pulled: about 6 KB of JSON, what an informer that keeps whole nodes
// caches), kube-controller-manager's podCIDR and flanneld's annotations.
func (g *Peers) node(p Peer) *v1.Node {
	ann := g.annotations(p)
	ann[KubeletAnnotation] = "true"
	ann["node.alpha.kubernetes.io/ttl"] = "0"
	addr := p.PublicIP.String()
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	res := v1.ResourceList{
		v1.ResourceCPU: resource.MustParse("8"), v1.ResourceMemory: resource.MustParse("32879640Ki"),
		v1.ResourcePods: resource.MustParse("110"), v1.ResourceEphemeralStorage: resource.MustParse("101445540Ki"),
		"hugepages-1Gi": resource.MustParse("0"), "hugepages-2Mi": resource.MustParse("0"),
	}
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Annotations: ann, Labels: map[string]string{
			"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"kubernetes.io/hostname": p.Name, "kubernetes.io/os": "linux",
			"node.kubernetes.io/instance-type": "m5.2xlarge", "topology.kubernetes.io/region": "region-1",
			"topology.kubernetes.io/zone": "region-1" + string(rune('a'+p.Index%3)),
		}},
		Spec: v1.NodeSpec{PodCIDR: p.Subnet.String(), PodCIDRs: []string{p.Subnet.String()},
			ProviderID: "fake://" + p.Name},
		Status: v1.NodeStatus{
			Capacity: res, Allocatable: res,
			Addresses:       []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: addr}, {Type: v1.NodeHostName, Address: p.Name}},
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: 10250}},
			NodeInfo: v1.NodeSystemInfo{MachineID: fmt.Sprintf("%032x", p.Index), SystemUUID: fmt.Sprintf("ec2%029x", p.Index),
				BootID: fmt.Sprintf("%08x-0000-4000-8000-%012x", p.Index, p.Index), KernelVersion: "6.1.0-28-cloud-amd64",
				OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.24",
				KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64"},
		},
	}
	for _, c := range []struct {
		typ             v1.NodeConditionType
		status          v1.ConditionStatus
		reason, message string
	}{
		{v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
		{v1.NodeReady, v1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"},
	} {
		n.Status.Conditions = append(n.Status.Conditions, v1.NodeCondition{Type: c.typ, Status: c.status,
			LastHeartbeatTime: now, LastTransitionTime: now, Reason: c.reason, Message: c.message})
	}
	for i := range 20 {
		repo := "registry.example/team-" + strconv.Itoa(i%7) + "/service-" + strconv.Itoa(i)
		n.Status.Images = append(n.Status.Images, v1.ContainerImage{
			Names:     []string{repo + "@sha256:" + fmt.Sprintf("%064x", i*7919+1), repo + ":v1." + strconv.Itoa(i) + ".3"},
			SizeBytes: int64(20_000_000 + i*3_000_000),
		})
	}
	return n
}
