package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// extensionHostGW is the host-gw example of flannel's documentation
// (Documentation/extension.md), verbatim but for the network.
const extensionHostGW = `{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","Backend":{
  "Type": "extension",
  "SubnetAddCommand": "ip route add \"$SUBNET\" via \"$PUBLIC_IP\"",
  "SubnetRemoveCommand": "ip route del \"$SUBNET\" via \"$PUBLIC_IP\""}}`

// extensionFull uses every command: the pre-start command publishes the
// host's eth0 address, the post-start one records its variables, and the
// add command records the peer's variables and standard input (the
// peer's published data), then fails. %s is the directory for the files.
const extensionFull = `{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","Backend":{
  "Type": "extension",
  "PreStartupCommand": "ip -4 -o addr show dev eth0 | awk '{print $4}'",
  "PostStartupCommand": "echo \"$NETWORK $SUBNET $PUBLIC_IP\" > %[1]s/post-$PUBLIC_IP",
  "SubnetAddCommand": "read DATA; echo \"$SUBNET $PUBLIC_IP $DATA\" > %[1]s/add-$PUBLIC_IP; echo oops; exit 3"}}`

// TestExtension runs the extension backend on two hosts: the host-gw
// example of flannel's documentation carries pod traffic and removes a
// peer's route when its lease goes; then every command, the pre-start
// output published as BackendData and handed to the peer's add command on
// standard input, and a failing command logged with its exit status and
// output while the daemon goes on.
func TestExtension(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-ext", 2, extensionHostGW)
	for i := 1; i <= 2; i++ {
		startNode(t, c, i)
		if err := c.Nodes[i].AddPods(1); err != nil {
			t.Fatal(err)
		}
	}
	n1, n2 := c.Nodes[1], c.Nodes[2]
	t.Run("flannel's host-gw example carries pod traffic", func(t *testing.T) {
		fullMesh(t, allPods(c, 1, 2))
		if r := routeTo(t, c.Hosts[0], n2.Env.Subnet.Masked()); !strings.Contains(r, "via 192.0.2.2 dev eth0") {
			t.Errorf("host 1's route to host 2's subnet %q, want the command's via 192.0.2.2 dev eth0", r)
		}
		checkLease(t, c, n1, `{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"extension"}`)
		if n1.Env.MTU != 1500 {
			t.Errorf("FLANNEL_MTU %d, want the external MTU 1500", n1.Env.MTU)
		}
	})
	t.Run("SubnetRemoveCommand runs when a peer's lease goes", func(t *testing.T) {
		sn := n2.Env.Subnet.Masked()
		if err := n2.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.Delete(context.Background(), subnetKey(n2)); err != nil {
			t.Fatal(err)
		}
		if err := testbed.Eventually(10*time.Second, func() error {
			if r := routeTo(t, c.Hosts[0], sn); r != "" {
				return fmt.Errorf("host 1 still routes %v: %s", sn, r)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	dir := t.TempDir()
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	etcdPut(t, c, testbed.EtcdPrefix+"/config", fmt.Sprintf(extensionFull, dir))
	n1, n2 = startNode(t, c, 1), startNode(t, c, 2)
	t.Run("PreStartupCommand's output is BackendData and the peer's stdin", func(t *testing.T) {
		checkLease(t, c, n1, `{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"extension","BackendData":"192.0.2.1/24"}`)
		got := waitFile(t, filepath.Join(dir, "add-192.0.2.1")) // host 2 ran it for host 1
		if want := fmt.Sprintf("%v 192.0.2.1 192.0.2.1/24\n", n1.Env.Subnet.Masked()); got != want {
			t.Errorf("host 2's SubnetAddCommand for host 1 recorded %q, want %q", got, want)
		}
		post := waitFile(t, filepath.Join(dir, "post-192.0.2.2"))
		if want := fmt.Sprintf("198.18.0.0/16 %v 192.0.2.2\n", n2.Env.Subnet.Masked()); post != want {
			t.Errorf("host 2's PostStartupCommand recorded %q, want %q", post, want)
		}
	})
	t.Run("a failing command is logged and the daemon goes on", func(t *testing.T) {
		failed := regexp.MustCompile(`level=ERROR msg="SubnetAddCommand failed".*output=oops.*exit_status=3`)
		if err := n2.Proc.WaitLog(failed, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if v, err := n2.Metric("flannelu_extension_command_failures_total"); err != nil || v < 1 {
			t.Errorf("flannelu_extension_command_failures_total %v (%v), want at least 1", v, err)
		}
		if n2.Proc.Exited() {
			t.Fatalf("flannelu on host 2 exited after the failing command:%s", testbed.Tail(n2.Proc.Log, 10))
		}
		checkMetrics(t, n2, append(commonFamilies, "flannelu_extension_command_failures_total")...)
	})
	// flanneld v0.28.9 exits 1 when either start-up command fails (its
	// RegisterNetwork error), before its rules and subnet.env: the
	// pre-start one before the lease, the post-start one after it.
	t.Run("a failing start-up command stops the start, as flanneld's", func(t *testing.T) {
		if err := n1.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"PreStartupCommand", "PostStartupCommand"} {
			etcdPut(t, c, testbed.EtcdPrefix+"/config", `{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0",`+
				`"Backend":{"Type":"extension","`+cmd+`":"echo broken; exit 4"}}`)
			n, err := c.LaunchNode(1)
			if err != nil {
				t.Fatal(err)
			}
			if exited, err := n.Proc.Wait(30 * time.Second); !exited || err == nil {
				t.Fatalf("flannelu with a failing %s: exited %v (%v), want an error exit:%s", cmd, exited, err, testbed.Tail(n.Proc.Log, 5))
			}
			said := regexp.MustCompile(`level=ERROR msg="flannelu stopped" error=".*` + cmd + ` .*exit status 4 \(output: \\"broken\\"\)`)
			if err := n.Proc.WaitLog(said, time.Second); err != nil {
				t.Error(err)
			}
			if _, err := os.Stat(n.SubnetFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("with a failing %s subnet.env was written (%v)", cmd, err)
			}
		}
	})
}

// checkLease compares node n's lease value in etcd with want.
func checkLease(t *testing.T, c *testbed.Cluster, n *testbed.Node, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Client.Get(ctx, subnetKey(n))
	if err != nil || resp.Count != 1 {
		t.Fatalf("lease %s: %v", subnetKey(n), err)
	}
	if got := string(resp.Kvs[0].Value); got != want {
		t.Errorf("lease %s = %s, want %s", subnetKey(n), got, want)
	}
}

// waitFile waits for a file a command writes and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	if err := testbed.Eventually(10*time.Second, func() error {
		var err error
		b, err = os.ReadFile(path)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAllocAndRefusals starts a host on an ipsec network (refused with
// the reason and what to use instead), then two hosts on an alloc network:
// leases and subnet.env as flanneld's alloc backend writes them, and no
// data path (no device, no route, pods do not reach each other).
func TestAllocAndRefusals(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-alloc", 2, `{"Network":"198.18.0.0/16","Backend":{"Type":"ipsec","PSK":"not long enough"}}`)
	t.Run("ipsec is refused, saying why and what instead", func(t *testing.T) {
		n, err := c.LaunchNode(1)
		if err != nil {
			t.Fatal(err)
		}
		if exited, err := n.Proc.Wait(30 * time.Second); !exited || err == nil {
			t.Fatalf("flannelu on an ipsec network: exited %v (%v), want a failure", exited, err)
		}
		log, _ := os.ReadFile(n.Proc.Log)
		for _, s := range []string{`backend type \"ipsec\"`, "strongswan", "ESP", `use \"wireguard\"`} {
			if !strings.Contains(string(log), s) {
				t.Errorf("the refusal does not say %s:%s", s, testbed.Tail(n.Proc.Log, 3))
			}
		}
	})
	etcdPut(t, c, testbed.EtcdPrefix+"/config", `{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"alloc"}}`)
	for i := 1; i <= 2; i++ {
		startNode(t, c, i)
		if err := c.Nodes[i].AddPods(1); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("alloc: leases and subnet.env, no data path", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			n := c.Nodes[i]
			checkLease(t, c, n, fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null}`, n.Host.Addr))
			if n.Env.MTU != 1500 || n.Env.Subnet.Bits() != 24 {
				t.Errorf("host %d subnet.env %+v, want a /24 and MTU 1500", i, n.Env)
			}
			links := n.Host.MustRun("ip", "-o", "link", "show")
			for _, dev := range []string{"flannel0", "flannel.1", "flannel.ipip", "flannel-wg"} {
				if strings.Contains(links, dev+":") || strings.Contains(links, dev+"@") {
					t.Errorf("host %d has %s: the alloc backend makes no device", i, dev)
				}
			}
		}
		peer := c.Nodes[2].Env.Subnet.Masked()
		if r := routeTo(t, c.Hosts[0], peer); r != "" {
			t.Errorf("host 1 routes host 2's subnet: %s", r)
		}
		p1, p2 := c.Hosts[0].Pods[0], c.Hosts[1].Pods[0]
		if out, err := p1.Run("ping", "-n", "-c", "1", "-W", "1", p2.Addr.String()); err == nil {
			t.Errorf("a pod reached the other host's pod with no data path:\n%s", out)
		}
	})
}

// routeTo is host h's route for exactly sn, "" when there is none.
func routeTo(t *testing.T, h *testbed.Host, sn netip.Prefix) string {
	t.Helper()
	return strings.TrimSpace(h.MustRun("ip", "route", "show", "exact", sn.String()))
}
