package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed/etcdtest"
	"github.com/flannelu/flannelu/testbed/logtest"
)

const prefix = "/coreos.com/network"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// cluster is one embedded etcd holding a network config.
type cluster struct {
	t   *testing.T
	srv *etcdtest.Server
	cli *clientv3.Client // the test's own client, playing the admin
	cfg *subnet.Config
}

func newCluster(t *testing.T, config string) *cluster {
	t.Helper()
	srv := etcdtest.Start(t)
	c := &cluster{t: t, srv: srv, cli: srv.Client()}
	if config != "" {
		c.put(prefix+"/config", config)
		cfg, err := subnet.ParseConfig([]byte(config))
		if err != nil {
			t.Fatal(err)
		}
		c.cfg = cfg
	}
	return c
}

func (c *cluster) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c.t.Cleanup(cancel)
	return ctx
}

func (c *cluster) put(key, val string, opts ...clientv3.OpOption) {
	c.t.Helper()
	if _, err := c.cli.Put(c.ctx(), key, val, opts...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) get(key string) (value string, lease int64, ok bool) {
	c.t.Helper()
	resp, err := c.cli.Get(c.ctx(), key)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Lease, true
}

// manager is a fresh Manager on its own client: a separate host.
func (c *cluster) manager(opts Options) *Manager {
	opts.Logger = quiet
	return NewManager(c.srv.Client(), opts)
}

// loggedManager is manager with a log the test can wait on; its lines
// show with a failing test.
func (c *cluster) loggedManager(opts Options) (*Manager, *logtest.Log) {
	var log *logtest.Log
	w := &testWriter{t: c.t}
	c.t.Cleanup(w.close) // registered first, so it runs after every other cleanup
	opts.Logger, log = logtest.New(w)
	return NewManager(c.srv.Client(), opts), log
}

// testWriter passes lines to t.Log until the test's cleanup, and drops
// the lines of goroutines that outlive it.
type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

func attrs(ip string) subnet.LeaseAttrs { return subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip)} }

func (c *cluster) acquire(m *Manager, ip string, prev netip.Prefix) subnet.Lease {
	c.t.Helper()
	l, err := m.AcquireLease(c.ctx(), c.cfg, attrs(ip), prev)
	if err != nil {
		c.t.Fatalf("AcquireLease(%s): %v", ip, err)
	}
	return l
}

func leaseKey(sn string) string { return prefix + "/subnets/" + sn }

func TestGetConfig(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "")
	m := c.manager(Options{})
	if _, err := m.GetConfig(c.ctx()); !errors.Is(err, subnet.ErrNoConfig) {
		t.Fatalf("no config: err = %v, want subnet.ErrNoConfig", err)
	}
	c.put(prefix+"/config", `{"Network":"198.18.0.0/16","SubnetLen":40}`)
	if _, err := m.GetConfig(c.ctx()); err == nil || !strings.Contains(err.Error(), "SubnetLen 40") {
		t.Fatalf("bad config: err = %v, want one naming SubnetLen 40", err)
	}
	c.put(prefix+"/config", `{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}`)
	cfg, err := m.GetConfig(c.ctx())
	if err != nil || cfg.Network.String() != "198.18.0.0/16" || cfg.BackendType != "vxlan" {
		t.Fatalf("GetConfig = %+v, %v", cfg, err)
	}
}

func TestAcquireWritesFlannelLease(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	l := c.acquire(c.manager(Options{}), "192.0.2.1", netip.Prefix{})
	val, lease, ok := c.get(leaseKey(subnet.MakeSubnetKey(l.Subnet, netip.Prefix{})))
	if !ok || val != `{"PublicIP":"192.0.2.1","PublicIPv6":null}` || lease != l.LeaseID || lease == 0 {
		t.Fatalf("stored %q lease %d ok %v; want flannel's udp value on etcd lease %d", val, lease, ok, l.LeaseID)
	}
	if !c.cfg.Fits(l.Subnet, l.IPv6Subnet) {
		t.Fatalf("acquired %s outside the range", l.Subnet)
	}
	if d := time.Until(l.Expiration); d < 23*time.Hour || d > 24*time.Hour {
		t.Fatalf("expires in %v, want the 24h default", d)
	}
}

func TestAcquireReusesLeaseOfSamePublicIP(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	first := c.acquire(c.manager(Options{}), "192.0.2.1", netip.Prefix{})
	c.acquire(c.manager(Options{}), "192.0.2.2", netip.Prefix{})
	// The host restarts: a new Manager, no subnet.env.
	again := c.acquire(c.manager(Options{}), "192.0.2.1", netip.Prefix{})
	if again.Subnet != first.Subnet {
		t.Fatalf("after restart got %s, want the same %s", again.Subnet, first.Subnet)
	}
	if _, lease, _ := c.get(leaseKey(subnet.MakeSubnetKey(again.Subnet, netip.Prefix{}))); lease != again.LeaseID || lease == first.LeaseID {
		t.Fatalf("key on etcd lease %d, want the new lease %d (old %d)", lease, again.LeaseID, first.LeaseID)
	}
}

func TestAcquireDeletesOwnLeaseOutsideRange(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16","SubnetMin":"198.18.100.0"}`)
	g, err := c.cli.Grant(c.ctx(), 60)
	if err != nil {
		t.Fatal(err)
	}
	stale := leaseKey("198.18.5.0-24")
	c.put(stale, `{"PublicIP":"192.0.2.1","PublicIPv6":null}`, clientv3.WithLease(g.ID))
	l := c.acquire(c.manager(Options{}), "192.0.2.1", netip.Prefix{})
	if !c.cfg.Fits(l.Subnet, l.IPv6Subnet) {
		t.Fatalf("got %s outside the range", l.Subnet)
	}
	if _, _, ok := c.get(stale); ok {
		t.Fatal("our lease outside the configured range was not deleted")
	}
}

func TestAcquireUsesPreviousSubnet(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	prev := netip.MustParsePrefix("198.18.77.0/24")
	if l := c.acquire(c.manager(Options{}), "192.0.2.1", prev); l.Subnet != prev {
		t.Fatalf("got %s, want the previous %s", l.Subnet, prev)
	}
	// Another host with the same stale subnet.env gets a different one.
	if l := c.acquire(c.manager(Options{}), "192.0.2.2", prev); l.Subnet == prev {
		t.Fatalf("second host also got %s", prev)
	}
	// A previous subnet outside the range is ignored.
	out := netip.MustParsePrefix("198.18.0.0/24")
	if l := c.acquire(c.manager(Options{}), "192.0.2.3", out); l.Subnet == out {
		t.Fatalf("got %s, which is below SubnetMin", out)
	}
}

func TestReservation(t *testing.T) {
	t.Parallel()
	// Two subnets in range: 198.18.1.0 reserved for 192.0.2.1, 198.18.2.0 free.
	c := newCluster(t, `{"Network":"198.18.0.0/16","SubnetMin":"198.18.1.0","SubnetMax":"198.18.2.0"}`)
	reserved := leaseKey("198.18.1.0-24")
	const resValue = `{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"host-gw"}`
	c.put(reserved, resValue) // no etcd lease: a reservation

	other := c.acquire(c.manager(Options{}), "192.0.2.2", netip.MustParsePrefix("198.18.1.0/24"))
	if other.Subnet.String() != "198.18.2.0/24" {
		t.Fatalf("another host got %s, want the free 198.18.2.0/24", other.Subnet)
	}
	_, err := c.manager(Options{}).AcquireLease(c.ctx(), c.cfg, attrs("192.0.2.3"), netip.Prefix{})
	if !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("third host: err = %v, want ErrNoFreeSubnet (the reservation is not free)", err)
	}
	own := c.acquire(c.manager(Options{}), "192.0.2.1", netip.Prefix{})
	if own.Subnet.String() != "198.18.1.0/24" || own.LeaseID != 0 {
		t.Fatalf("reserved host got %s lease %d, want 198.18.1.0/24 as a reservation", own.Subnet, own.LeaseID)
	}
	if val, lease, ok := c.get(reserved); !ok || val != resValue || lease != 0 {
		t.Fatalf("reservation now %q lease %d ok %v: it was rewritten or deleted", val, lease, ok)
	}
}

func TestAcquireRace(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16","SubnetLen":24}`)
	const hosts = 100
	clients := []*clientv3.Client{c.srv.Client(), c.srv.Client(), c.srv.Client(), c.srv.Client()}
	var wg sync.WaitGroup
	got := make([]subnet.Lease, hosts)
	errs := make([]error, hosts)
	start := make(chan struct{})
	for i := range hosts {
		wg.Go(func() {
			m := NewManager(clients[i%len(clients)], Options{Logger: quiet})
			<-start
			got[i], errs[i] = m.AcquireLease(c.ctx(), c.cfg, attrs(fmt.Sprintf("192.0.2.%d", i+1)), netip.Prefix{})
		})
	}
	close(start)
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, l := range got {
		if errs[i] != nil {
			t.Fatalf("host %d: %v", i, errs[i])
		}
		if j, dup := seen[l.Subnet]; dup {
			t.Fatalf("hosts %d and %d both got %s", j, i, l.Subnet)
		}
		seen[l.Subnet] = i
	}
	resp, err := c.cli.Get(c.ctx(), prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != hosts {
		t.Fatalf("%d lease keys in etcd (%v), want %d", resp.Count, err, hosts)
	}
}

func TestAcquireFullNetwork(t *testing.T) {
	t.Parallel()
	// /28 split into /30s: 198.18.0.4, .8, .12 are allocatable.
	c := newCluster(t, `{"Network":"198.18.0.0/28"}`)
	for i := 1; i <= 3; i++ {
		c.acquire(c.manager(Options{}), fmt.Sprintf("192.0.2.%d", i), netip.Prefix{})
	}
	_, err := c.manager(Options{}).AcquireLease(c.ctx(), c.cfg, attrs("192.0.2.9"), netip.Prefix{})
	if !errors.Is(err, ErrNoFreeSubnet) || !strings.Contains(err.Error(), "198.18.0.0/28") ||
		!strings.Contains(err.Error(), "198.18.0.4/30 to 198.18.0.12/30") {
		t.Fatalf("err = %v, want ErrNoFreeSubnet naming the network and range", err)
	}
}

func TestAcquireDualStack(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	a := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: netip.MustParseAddr("2001:db8::1")}
	l, err := c.manager(Options{}).AcquireLease(c.ctx(), c.cfg, a, netip.MustParsePrefix("198.18.9.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "198.18.9.0/24" || l.IPv6Subnet.String() != "fc00:0:0:9::/64" {
		t.Fatalf("got %s %s, want 198.18.9.0/24 fc00:0:0:9::/64", l.Subnet, l.IPv6Subnet)
	}
	val, _, ok := c.get(leaseKey("198.18.9.0-24&fc00:0:0:9::-64"))
	if !ok || val != `{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1"}` {
		t.Fatalf("dual-stack key holds %q (present %v)", val, ok)
	}
}
