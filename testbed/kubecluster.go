package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flannelu/flannelu/subnet"
)

// ManifestPath is flannelu's deployment manifest, which a Kubernetes-mode
// cluster applies.
func ManifestPath() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "deploy", "kube-flannelu.yml"), nil
}

// startKube starts the API server next to etcd on host 1, applies the
// manifest (flannel's RBAC among it) and writes the files flannelu reads.
func (c *Cluster) startKube() (err error) {
	h := c.Hosts[0]
	if c.KubeAPI, err = c.StartKubeAPIServer(h, c.Etcd, c.Opts.KubeAPIArgs...); err != nil {
		return err
	}
	if c.KubeAdmin, err = c.KubeAPI.Clientset(AdminUser); err != nil {
		return err
	}
	path, err := ManifestPath()
	if err != nil {
		return err
	}
	objs, err := ReadManifest(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.KubeAPI.Apply(ctx, AdminUser, objs); err != nil {
		return fmt.Errorf("apply %s: %w", path, err)
	}
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "kube-flannel-cfg" {
			conflist, _, _ := unstructured.NestedString(o.Object, "data", "cni-conf.json")
			c.KubeConflist = []byte(conflist)
		}
	}
	if c.KubeConflist == nil {
		return fmt.Errorf("%s: no ConfigMap kube-flannel-cfg with a cni-conf.json", path)
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := c.KubeAPI.WriteKubeconfig(c.Kubeconfig, FlannelUser); err != nil {
		return err
	}
	c.NetConfPath = filepath.Join(c.Dir, "net-conf.json")
	return os.WriteFile(c.NetConfPath, []byte(c.Opts.Config), 0o644)
}

// KubeletAnnotation is the annotation kubelet puts on every node it
// registers (flanneld v0.20.2 panics on a node with no annotation at all).
const KubeletAnnotation = "volumes.kubernetes.io/controller-managed-attach-detach"

// CreateNode registers host i's Node object, named as its namespace, as
// kubelet does (with KubeletAnnotation "true"), with the podCIDRs
// kube-controller-manager would assign (none: not yet assigned).
func (c *Cluster) CreateNode(i int, podCIDRs ...string) error {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.Hosts[i-1].Name,
		Annotations: map[string]string{KubeletAnnotation: "true"}}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDRs[0], podCIDRs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.KubeAdmin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	return err
}

// PodCIDR is the IPv4 podCIDR a Kubernetes-mode cluster gives host i, as
// kube-controller-manager with --allocate-node-cidrs would: 198.18.<i>.0/24.
func PodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
}

// PodCIDRv6 is host i's IPv6 podCIDR in a dual-stack Kubernetes-mode
// cluster: 2001:db8:100:<i>::/64, inside PodNetworkV6.
func PodCIDRv6(i int) netip.Prefix {
	a := PodNetworkV6.Addr().As16()
	a[7] = byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// RegisterNode registers host i's Node (CreateNode) with the podCIDRs
// kube-controller-manager would assign it: PodCIDR for an IPv4 network,
// PodCIDRv6 as well for an IPv6 one, as the cluster's net-conf.json asks.
func (c *Cluster) RegisterNode(i int) error {
	cfg, err := subnet.ParseKubeConfig([]byte(c.Opts.Config))
	if err != nil {
		return fmt.Errorf("testbed: net-conf.json: %w", err)
	}
	var cidrs []string
	if cfg.EnableIPv4 {
		cidrs = append(cidrs, PodCIDR(i).String())
	}
	if cfg.EnableIPv6 {
		cidrs = append(cidrs, PodCIDRv6(i).String())
	}
	return c.CreateNode(i, cidrs...)
}

// JoinNode brings host i into the cluster as a new node: in Kubernetes
// mode its Node is registered first (RegisterNode), as kubelet and
// kube-controller-manager do before the DaemonSet's pod starts; then
// flannelu starts (StartNode).
func (c *Cluster) JoinNode(i int, extra ...string) (*Node, error) {
	if c.Opts.Kube {
		if err := c.RegisterNode(i); err != nil {
			return nil, err
		}
	}
	return c.StartNode(i, extra...)
}

// KubeNode reads host i's Node object.
func (c *Cluster) KubeNode(i int) (*v1.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.KubeAdmin.CoreV1().Nodes().Get(ctx, c.Hosts[i-1].Name, metav1.GetOptions{})
}
