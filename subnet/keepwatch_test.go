package subnet

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keep runs KeepLease in the background; the returned channel yields its result.
func keep(c *cluster, m *Manager, l Lease) (<-chan error, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	c.t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, c.cfg, l) }()
	return done, cancel
}

func TestKeepLeaseRenews(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	m := c.manager(Options{LeaseTTL: 2 * time.Second, RenewMargin: time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, cancel := keep(c, m, l)
	time.Sleep(3*2*time.Second + 500*time.Millisecond) // three TTLs
	key := leaseKey(MakeSubnetKey(l.Subnet, netip.Prefix{}))
	if _, lease, ok := c.get(key); !ok || lease != l.LeaseID {
		t.Fatalf("after 3 TTLs: key present %v on lease %d, want the kept lease %d", ok, lease, l.LeaseID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepLease after cancel = %v, want nil", err)
	}
	// A clean shutdown leaves the lease in place.
	if _, _, ok := c.get(key); !ok {
		t.Fatal("KeepLease deleted the lease on shutdown")
	}
}

func TestKeepLeaseRenewsWhenMarginExceedsTTL(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	// Margin 60m (the default) with TTL 2s: renew at a third of the TTL.
	m := c.manager(Options{LeaseTTL: 2 * time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	keep(c, m, l)
	time.Sleep(5 * time.Second)
	if _, lease, ok := c.get(leaseKey(MakeSubnetKey(l.Subnet, netip.Prefix{}))); !ok || lease != l.LeaseID {
		t.Fatalf("key present %v lease %d, want kept lease %d", ok, lease, l.LeaseID)
	}
}

func TestKeepLeaseRetakesRevokedLease(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	m := c.manager(Options{LeaseTTL: 30 * time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, _ := keep(c, m, l)
	time.Sleep(200 * time.Millisecond) // let the keeper start watching
	if _, err := c.cli.Revoke(c.ctx(), clientv3.LeaseID(l.LeaseID)); err != nil {
		t.Fatal(err)
	}
	key := leaseKey(MakeSubnetKey(l.Subnet, netip.Prefix{}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if val, lease, ok := c.get(key); ok && lease != l.LeaseID && lease != 0 {
			if val != `{"PublicIP":"192.0.2.1","PublicIPv6":null}` {
				t.Fatalf("retaken with value %s", val)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("KeepLease returned %v instead of retaking the subnet", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("subnet not retaken within 10s of the revocation")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKeepLeaseTakenByAnother(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	m := c.manager(Options{LeaseTTL: 30 * time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, _ := keep(c, m, l)
	time.Sleep(200 * time.Millisecond)
	// Another host's value replaces ours in one write.
	c.put(leaseKey(MakeSubnetKey(l.Subnet, netip.Prefix{})), `{"PublicIP":"192.0.2.7","PublicIPv6":null}`)
	select {
	case err := <-done:
		if !errors.Is(err, ErrLeaseTaken) || !strings.Contains(err.Error(), l.Subnet.String()) ||
			!strings.Contains(err.Error(), "192.0.2.7") {
			t.Fatalf("err = %v, want ErrLeaseTaken naming %s and 192.0.2.7", err, l.Subnet)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepLease did not notice its subnet was taken")
	}
}

// recorder collects WatchLeases batches.
type recorder struct {
	ch chan []Event
}

func watch(c *cluster, m *Manager) (*recorder, context.CancelFunc) {
	r := &recorder{ch: make(chan []Event, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, func(ev []Event) { r.ch <- ev }) }()
	c.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			c.t.Errorf("WatchLeases returned %v", err)
		}
	})
	return r, cancel
}

// describe renders events as sorted "type subnet ip" strings.
func describe(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type.String()+" "+e.Lease.Subnet.String()+" "+e.Lease.Attrs.PublicIP.String())
	}
	sort.Strings(out)
	return out
}

// expect waits for exactly want (in any order, across batches), then checks
// that nothing more arrives for a short while.
func (r *recorder) expect(t *testing.T, want ...string) {
	t.Helper()
	var got []Event
	timeout := time.After(15 * time.Second)
	for len(got) < len(want) {
		select {
		case evs := <-r.ch:
			got = append(got, evs...)
		case <-timeout:
			t.Fatalf("timed out: got %v, want %v", describe(got), want)
		}
	}
	select {
	case evs := <-r.ch:
		got = append(got, evs...)
	case <-time.After(300 * time.Millisecond):
	}
	sort.Strings(want)
	if g := describe(got); strings.Join(g, "|") != strings.Join(want, "|") {
		t.Fatalf("events %v, want %v", g, want)
	}
}

const (
	valA  = `{"PublicIP":"192.0.2.1","PublicIPv6":null}`
	valB  = `{"PublicIP":"192.0.2.2","PublicIPv6":null}`
	valB2 = `{"PublicIP":"192.0.2.22","PublicIPv6":null}`
	valC  = `{"PublicIP":"192.0.2.3","PublicIPv6":null}`
)

func TestWatchLeasesEvents(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	c.put(leaseKey("198.18.1.0-24"), valA)
	r, _ := watch(c, c.manager(Options{}))
	r.expect(t, "added 198.18.1.0/24 192.0.2.1")
	c.put(leaseKey("198.18.2.0-24"), valB)
	r.expect(t, "added 198.18.2.0/24 192.0.2.2")
	c.put(leaseKey("198.18.2.0-24"), ` {"PublicIP":"192.0.2.2", "PublicIPv6":null}`) // same attributes
	c.put(leaseKey("198.18.2.0-24"), valB2)
	r.expect(t, "changed 198.18.2.0/24 192.0.2.22")
	if _, err := c.cli.Delete(c.ctx(), leaseKey("198.18.2.0-24")); err != nil {
		t.Fatal(err)
	}
	r.expect(t, "removed 198.18.2.0/24 192.0.2.22")
}

// The first call reports the initial list even when it is empty: the
// daemon starts its backend on that "synced" signal.
func TestWatchLeasesReportsEmptyFirstList(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	r, _ := watch(c, c.manager(Options{}))
	select {
	case evs := <-r.ch:
		if len(evs) != 0 {
			t.Fatalf("first batch of an empty store = %v, want empty", describe(evs))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("WatchLeases never reported the (empty) first list")
	}
}

func TestWatchLeasesBatchesOneResponse(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	r, _ := watch(c, c.manager(Options{}))
	if evs := <-r.ch; len(evs) != 0 { // the empty first list
		t.Fatalf("first batch = %v, want empty", describe(evs))
	}
	if _, err := c.cli.Txn(c.ctx()).Then(
		clientv3.OpPut(leaseKey("198.18.1.0-24"), valA),
		clientv3.OpPut(leaseKey("198.18.2.0-24"), valB)).Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case evs := <-r.ch:
		if len(evs) != 2 {
			t.Fatalf("one transaction gave a batch of %v, want both events together", describe(evs))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no events")
	}
}

func TestWatchSeesDeadNodeExpire(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	r, _ := watch(c, c.manager(Options{}))
	dead := c.manager(Options{LeaseTTL: 2 * time.Second})
	l := c.acquire(dead, "192.0.2.5", netip.Prefix{}) // and never kept alive
	r.expect(t, "added "+l.Subnet.String()+" 192.0.2.5")
	r.expect(t, "removed "+l.Subnet.String()+" 192.0.2.5")
}

func TestWatchRecoversFromCompaction(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	c.put(leaseKey("198.18.1.0-24"), valA) // will be deleted
	c.put(leaseKey("198.18.2.0-24"), valB) // will change
	c.put(leaseKey("198.18.4.0-24"), valA) // stays
	m := c.manager(Options{})
	lists := 0
	m.testHookAfterList = func(int64) {
		lists++
		if lists > 1 {
			return
		}
		// Between the list and the watch: changes, then a compaction
		// past them, so the watch from list+1 is compacted away.
		c.put(leaseKey("198.18.3.0-24"), valC)
		c.put(leaseKey("198.18.2.0-24"), valB2)
		c.put(leaseKey("198.18.2.0-24"), valB2)
		if _, err := c.cli.Delete(c.ctx(), leaseKey("198.18.1.0-24")); err != nil {
			t.Error(err)
		}
		c.srv.CompactNow()
	}
	r, _ := watch(c, m)
	r.expect(t,
		"added 198.18.1.0/24 192.0.2.1", "added 198.18.2.0/24 192.0.2.2", "added 198.18.4.0/24 192.0.2.1",
		"added 198.18.3.0/24 192.0.2.3", "changed 198.18.2.0/24 192.0.2.22", "removed 198.18.1.0/24 192.0.2.1")
	if lists != 2 {
		t.Fatalf("listed %d times, want 2: the compacted watch must force exactly one re-list", lists)
	}
}

func TestWatchSurvivesEtcdRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	c.put(leaseKey("198.18.1.0-24"), valA)
	c.put(leaseKey("198.18.2.0-24"), valB)
	r, _ := watch(c, c.manager(Options{}))
	r.expect(t, "added 198.18.1.0/24 192.0.2.1", "added 198.18.2.0/24 192.0.2.2")
	c.srv.Restart()
	c.put(leaseKey("198.18.3.0-24"), valC)
	c.put(leaseKey("198.18.2.0-24"), valB2)
	if _, err := c.cli.Delete(c.ctx(), leaseKey("198.18.1.0-24")); err != nil {
		t.Fatal(err)
	}
	r.expect(t, "added 198.18.3.0/24 192.0.2.3", "changed 198.18.2.0/24 192.0.2.22", "removed 198.18.1.0/24 192.0.2.1")
}

func TestWatchSkipsMalformed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	c.put(leaseKey("198.18.1.0-24"), valA)
	c.put(leaseKey("198.18.2.0-24"), `{"PublicIP":"not-an-ip"}`)
	c.put(leaseKey("garbage"), valB)
	m := c.manager(Options{})
	r, _ := watch(c, m)
	r.expect(t, "added 198.18.1.0/24 192.0.2.1")
	c.put(leaseKey("198.18.3.0-24"), `{`)
	c.put(leaseKey("198.18.4.0-24"), valC)
	r.expect(t, "added 198.18.4.0/24 192.0.2.3")
	if n := m.MalformedLeases(); n != 3 {
		t.Fatalf("MalformedLeases = %d, want 3", n)
	}
	// The malformed values are skipped, not deleted.
	if v, _, ok := c.get(leaseKey("198.18.2.0-24")); !ok || v != `{"PublicIP":"not-an-ip"}` {
		t.Fatalf("malformed lease became %q (present %v)", v, ok)
	}
	// A malformed lease still occupies its subnet for allocation.
	l := c.acquire(m, "192.0.2.9", netip.MustParsePrefix("198.18.2.0/24"))
	if l.Subnet.String() == "198.18.2.0/24" {
		t.Fatal("allocated the subnet of a malformed lease")
	}
}
