package e2e

import (
	"context"
	"regexp"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/testbed"
)

// TestLeaseTakenByAnotherHost moves host 1's subnet to another live host
// behind its back (its key rewritten on another etcd lease, naming
// another address: what a second flanneld that won the subnet writes).
// flannelu on host 1 must not fight for the key: it exits with an error
// saying the lease was taken, and before that withdraws what it
// programmed for its peers (vxlan: route, neighbour and fdb entry; udp:
// flannel0 and the network's route with it), since the subnet its pods
// sit in now routes to someone else.
func TestLeaseTakenByAnotherHost(t *testing.T) {
	testbed.RequireRoot(t)
	for _, backend := range []string{"vxlan", "udp"} {
		t.Run(backend, func(t *testing.T) {
			c := newCluster(t, "e2e-taken-"+backend[:1], 2, ipv4.config(backend))
			n1, n2 := twoNodes(t, c)
			h1, peer := c.Hosts[0], n2.Env.Subnet.Masked()
			var withdrawn func()
			switch backend {
			case "vxlan":
				if got := readVxPeer(t, h1, peer); got.route == "" || got.neigh == "" || len(got.fdb) == 0 {
					t.Fatalf("host 1 before: %v for host 2's %s", got, peer)
				}
				withdrawn = func() {
					if got := readVxPeer(t, h1, peer); got.route != "" || got.neigh != "" || len(got.fdb) != 0 {
						t.Errorf("host 1 after its lease was taken still has %v for host 2's %s", got, peer)
					}
				}
			case "udp":
				withdrawn = func() {
					if _, err := h1.Run("ip", "link", "show", "flannel0"); err == nil {
						t.Errorf("host 1 still has flannel0 after its lease was taken:\n%s", h1.MustRun("ip", "route"))
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			other, err := c.Client.Grant(ctx, 600)
			if err != nil {
				t.Fatal(err)
			}
			taken := time.Now()
			etcdPut(t, c, subnetKey(n1), leaseValue("192.0.2.250"), clientv3.WithLease(other.ID))
			exited, err := n1.Proc.Wait(30 * time.Second)
			if !exited || err == nil {
				t.Fatalf("flannelu on host 1 after its subnet was taken: exited %v (%v), want an error exit:%s",
					exited, err, testbed.Tail(n1.Proc.Log, 10))
			}
			t.Logf("%s: subnet taken -> flannelu on host 1 exited %v later", backend, time.Since(taken).Round(time.Millisecond))
			said := regexp.MustCompile(`level=ERROR msg="flannelu stopped" error=".*lease taken by another host: subnet ` +
				regexp.QuoteMeta(n1.Env.Subnet.Masked().String()) + ` is now held by PublicIP 192\.0\.2\.250 \(etcd lease `)
			if err := n1.Proc.WaitLog(said, time.Second); err != nil {
				t.Error(err)
			}
			withdrawn()
			// The new holder's value stays: flannelu did not write it back.
			resp, err := c.Client.Get(ctx, subnetKey(n1))
			if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != leaseValue("192.0.2.250") || resp.Kvs[0].Lease != int64(other.ID) {
				t.Errorf("%s after host 1 left: %v %v, want the other host's value on its etcd lease", subnetKey(n1), resp, err)
			}
			if n2.Proc.Exited() {
				t.Errorf("flannelu on host 2 exited:%s", testbed.Tail(n2.Proc.Log, 10))
			}
		})
	}
}
