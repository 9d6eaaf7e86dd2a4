package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// flanneldBin is where scripts/flanneld.sh (make flanneld) builds flanneld
// v0.20.2.
const flanneldBin = "bin/flanneld-v0.20.2"

// TestKubernetesModeWithFlanneld runs flanneld v0.20.2 with
// --kube-subnet-mgr on host 3 next to flannelu on hosts 1 and 2, on one
// API server, vxlan (the common backend), as flannel's service account:
// the annotations flanneld writes are exactly the ones flannelu's tests
// expect of flannelu, and the pods of both reach each other.
func TestKubernetesModeWithFlanneld(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	flanneld := flanneldBinary(t)
	k := &kubeCluster{backend: "vxlan", stack: ipv4, c: newClusterWith(t, testbed.ClusterOptions{
		Bed:    testbed.Options{Name: "e2e-kf", Hosts: 3},
		Config: ipv4.kubeConfig("vxlan"),
		Kube:   true,
	})}
	c := k.c
	for i := 1; i <= 3; i++ {
		if err := c.RegisterNode(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 2; i++ {
		if err := startNode(t, c, i, "--ip-masq").AddCNIPods(2); err != nil {
			t.Fatal(err)
		}
	}
	h3 := c.Hosts[2]
	subnetFile := filepath.Join(c.Dir, h3.Name, "subnet.env")
	p, err := c.Start(h3.NS, "flanneld-"+h3.Name, "env", "NODE_NAME="+h3.Name, flanneld, "--kube-subnet-mgr",
		"--kubeconfig-file", c.Kubeconfig, "--net-config-path", c.NetConfPath, "--iface", "eth0",
		"--subnet-file", subnetFile, "--ip-masq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("flanneld on %s:%s", h3.Name, testbed.Tail(p.Log, 30))
		}
	})
	if err := testbed.Eventually(60*time.Second, func() error {
		_, err := subnet.ReadEnv(subnetFile)
		if err == nil || p.Exited() {
			return nil
		}
		return err
	}); err != nil || p.Exited() {
		t.Fatalf("flanneld wrote no subnet.env (%v):%s", err, testbed.Tail(p.Log, 20))
	}
	if _, err := h3.UseCNI(c.KubeConflist, subnetFile); err != nil {
		t.Fatal(err)
	}
	if err := h3.CNI.AddPods(2); err != nil {
		t.Fatal(err)
	}
	t.Run("flanneld's annotations are the ones flannelu writes", func(t *testing.T) {
		n, err := c.KubeNode(3)
		if err != nil {
			t.Fatal(err)
		}
		want, err := k.wantAnnotations(3)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(n.Annotations) != fmt.Sprint(want) {
			t.Errorf("flanneld's annotations on node 3:\n  %v\nflannelu's tests expect\n  %v", n.Annotations, want)
		}
	})
	t.Run("full mesh ping across flannelu and flanneld", func(t *testing.T) { fullMesh(t, allPods(c, 1, 2, 3)) })
}

// flanneldBinary is flanneld v0.20.2, built if missing (flanneldBinaryOf).
func flanneldBinary(t *testing.T) string { return flanneldBinaryOf(t, flanneldBin) }
