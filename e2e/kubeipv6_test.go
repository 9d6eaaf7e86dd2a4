package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// TestKubernetesModeDualStack runs the kernel backends in Kubernetes mode
// on a dual-stack network (198.18.0.0/16 and 2001:db8:100::/48) over an
// IPv4 and IPv6 underlay: three nodes registered with one IPv4 and one
// IPv6 podCIDR each, as kube-controller-manager assigns them with a
// dual-stack --cluster-cidr; flanneld v0.28's annotations (backend-v6-data
// and public-ipv6 besides the IPv4 ones) and both subnets in subnet.env;
// exactly the kernel state flannel programs for both families; pods made
// by the manifest's CNI chain reaching each other over both.
//
// The udp backend (which carries IPv6, where flanneld's does not) publishes
// the same IPv6 annotations with backend-v6-data null, and its pods reach
// each other over both families as well.
func TestKubernetesModeDualStack(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	for _, backend := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			k := newKubeCluster(t, backend, dualStack)
			t.Run("annotations and subnet.env as flanneld v0.28 writes them", k.checkAnnotations)
			kc, err := k.kernelView()
			if err != nil {
				t.Fatal(err)
			}
			t.Run("full mesh ping and ping6", func(t *testing.T) { fullMesh(t, kc.pods(1, 2, 3)) })
			if backend == "udp" {
				t.Run("32 MB TCP over IPv6 byte for byte", func(t *testing.T) {
					transfer(t, k.c.Bed, v6Pod(k.c.Hosts[0].Pods[0]), v6Pod(k.c.Hosts[1].Pods[1]), 32<<20)
				})
				return // the kernel checks below are for the kernel backends
			}
			t.Run("kernel state on host 1", func(t *testing.T) {
				if err := kc.state(1, 2, 3); err != nil {
					t.Fatal(err)
				}
				kc.checkDevice(t)
			})
			t.Run("ip6tables rules", kc.checkIP6Tables)
			t.Run("32 MB TCP over IPv6 byte for byte", func(t *testing.T) {
				transfer(t, k.c.Bed, v6Pod(k.c.Hosts[0].Pods[0]), v6Pod(k.c.Hosts[1].Pods[1]), 32<<20)
			})
		})
	}
}

// kernelView is the cluster as the kernel backend tests see one: each
// host's lease as its Node publishes it (podCIDRs, public IPs, VtepMACs),
// so that their checks of the kernel state apply unchanged.
func (k *kubeCluster) kernelView() (*kernelCluster, error) {
	kc := &kernelCluster{c: k.c, backend: k.backend, stack: k.stack, leases: map[int]leaseInfo{}}
	for i := 1; i <= 3; i++ {
		n, err := k.c.KubeNode(i)
		if err != nil {
			return nil, err
		}
		get := func(name string) string { return n.Annotations["flannel.alpha.coreos.com/"+name] }
		l := leaseInfo{Subnet: testbed.PodCIDR(i), Subnet6: testbed.PodCIDRv6(i)}
		if l.Public, err = netip.ParseAddr(get("public-ip")); err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		if l.Public6, err = netip.ParseAddr(get("public-ipv6")); err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		for key, mac := range map[string]*string{"backend-data": &l.MAC, "backend-v6-data": &l.MAC6} {
			var data struct{ VtepMAC string }
			if err := json.Unmarshal([]byte(get(key)), &data); err != nil {
				return nil, fmt.Errorf("node %d: %s: %w", i, key, err)
			}
			*mac = data.VtepMAC
		}
		kc.leases[i] = l
	}
	return kc, nil
}
