package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/testbed"
)

// vxlanLeaseValue is flanneld's vxlan lease value with backend data data.
func vxlanLeaseValue(ip, data string) string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":%s}`, ip, data)
}

// badVtepMACs are the probe's invalid VtepMACs: not a MAC, multicast,
// zero, missing, and backend data that is an array.
var badVtepMACs = []string{`{"VNI":1,"VtepMAC":"zz:zz:zz"}`, `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`,
	`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`, `{"VNI":1}`, `[{"VNI":1,"VtepMAC":"02:00:00:00:03:31"}]`}

// TestInvalidVtepMACKeepsPeer is the probe's invalid VtepMAC case with
// etcd (TestKubernetesHardening has it with the Kubernetes store): a lease
// only the test writes, rewritten with each invalid VtepMAC, keeps its
// route, neighbour and fdb entry with the last valid MAC on both hosts, and
// each write counts as bad_backend_data; host 2's own lease overwritten
// with one (its flannelu writes it back) costs host 1's pod no echo.
func TestInvalidVtepMACKeepsPeer(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-vtep", 2, ipv4.config("vxlan"))
	n1, n2 := twoNodes(t, c)
	k := &kubeProbe{t: t, c: c} // its vxlan readers work for any store
	sn := netip.MustParsePrefix("198.18.230.0/24")
	key := testbed.EtcdPrefix + "/subnets/198.18.230.0-24"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	grant, err := c.Client.Grant(ctx, 300)
	if err != nil {
		t.Fatal(err)
	}
	etcdPut(t, c, key, vxlanLeaseValue("192.0.2.230", `{"VNI":1,"VtepMAC":"02:00:00:00:03:30"}`), clientv3.WithLease(grant.ID))
	good := vxPeerOf(sn, "192.0.2.230", "02:00:00:00:03:30")
	k.waitVxPeer(t, sn, good, 1, 2)
	for _, data := range badVtepMACs {
		base := k.metricsOf(invalidLeases("bad_backend_data"), 1, 2)
		etcdPut(t, c, key, vxlanLeaseValue("192.0.2.230", data), clientv3.WithLease(grant.ID))
		k.waitMetricsAbove(t, invalidLeases("bad_backend_data"), base)
		for i, h := range c.Hosts {
			if got := readVxPeer(t, h, sn); got.String() != good.String() {
				t.Errorf("BackendData %s: host %d has %v, want the last valid %v", data, i+1, got, good)
			}
		}
	}
	k.logged(t, 1, `msg="invalid peer lease write ignored; its last valid value stays in use" key=`+key+` .*reason=bad_backend_data`)
	if _, err := c.Client.Revoke(ctx, grant.ID); err != nil {
		t.Fatal(err)
	}
	k.waitVxPeer(t, sn, vxPeer{}, 1, 2)

	stop := pinger(t, c, "ping-vtep", c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr.String())
	base, _ := n1.Metric(invalidLeases("bad_backend_data"))
	etcdPut(t, c, subnetKey(n2), vxlanLeaseValue(c.Hosts[1].Addr.String(), badVtepMACs[0]))
	waitMetricAbove(t, n1, invalidLeases("bad_backend_data"), base)
	if err := n2.Proc.WaitLog(regexp.MustCompile(`msg="own subnet lease restored"`), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	sent, received := stop()
	noLoss(t, "pod 1 to pod 2 while host 2's lease had VtepMAC zz:zz:zz", sent, received)
}
