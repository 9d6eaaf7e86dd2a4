//go:build linux

package main

import (
	"slices"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// TestKubeSetup builds the udp-kube testbed (a real kube-apiserver; about
// 15 s as root): flannelu runs in Kubernetes mode on both hosts, each
// with its Node's podCIDR as the lease and flannel's annotations on the
// Node, and the pods reach each other (setupPath checks that).
func TestKubeSetup(t *testing.T) {
	s := setUp(t, kubePath, "-flannelu", flanneluForTest(t, t.TempDir()))
	c, ok := s.tb.(*testbed.Cluster)
	if !ok || c.KubeAPI == nil {
		t.Fatalf("the udp-kube testbed is %T, not a cluster with an API server", s.tb)
	}
	for i, n := range s.nodes {
		if !slices.Contains(n.Args, "--kube-subnet-mgr") {
			t.Errorf("host %d: flannelu runs without --kube-subnet-mgr: %v", i, n.Args)
		}
		if n.Env.Subnet != testbed.PodCIDR(i) {
			t.Errorf("host %d: subnet.env's subnet %v, want the podCIDR %v", i, n.Env.Subnet, testbed.PodCIDR(i))
		}
		node, err := c.KubeNode(i)
		if err != nil {
			t.Fatal(err)
		}
		if got := node.Annotations["flannel.alpha.coreos.com/kube-subnet-manager"]; got != "true" {
			t.Errorf("host %d: node annotation kube-subnet-manager %q, want \"true\"", i, got)
		}
	}
}
