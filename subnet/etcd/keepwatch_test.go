package etcd

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// eventDeadline bounds every wait for an event here: only a failing test
// reaches it.
const eventDeadline = 30 * time.Second

// keep runs KeepLease in the background; the returned channel yields its result.
func keep(c *cluster, m *Manager, l subnet.Lease) (<-chan error, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	c.t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, c.cfg, l) }()
	return done, cancel
}

// waitLog waits until msg has been logged n times in all.
func waitLog(t *testing.T, log *logtest.Log, msg string, n int) {
	t.Helper()
	if err := log.Wait(msg, n, eventDeadline); err != nil {
		t.Fatal(err)
	}
}

// checkKept fails unless the subnet's key is on lease l and etcd still
// counts that lease down, more than one TTL after it was granted: the
// keeper's renewals are what kept it.
func checkKept(t *testing.T, c *cluster, l subnet.Lease, granted time.Time, ttl time.Duration) {
	t.Helper()
	key := leaseKey(subnet.MakeSubnetKey(l.Subnet, netip.Prefix{}))
	if _, lease, ok := c.get(key); !ok || lease != l.LeaseID {
		t.Fatalf("key present %v on lease %d, want the kept lease %d", ok, lease, l.LeaseID)
	}
	resp, err := c.cli.TimeToLive(c.ctx(), clientv3.LeaseID(l.LeaseID))
	if err != nil || resp.TTL <= 0 {
		t.Fatalf("lease %d: TTL %d (%v), want alive", l.LeaseID, resp.TTL, err)
	}
	if age := time.Since(granted); age <= ttl {
		t.Fatalf("the renewals came within %v of the grant, before the %v TTL was over: renewing too early", age, ttl)
	}
}

func TestKeepLeaseRenews(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	// Renewals 3 s before expiry, every second: the fifth comes about 5 s
	// after the grant, past the TTL. The margin is the time a renewal has
	// on a loaded machine before the lease would expire.
	const ttl = 4 * time.Second
	m, log := c.loggedManager(Options{LeaseTTL: ttl, RenewMargin: 3 * time.Second})
	granted := time.Now()
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, cancel := keep(c, m, l)
	waitLog(t, log, leaseRenewed, 5)
	checkKept(t, c, l, granted, ttl)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepLease after cancel = %v, want nil", err)
	}
	// A clean shutdown leaves the lease in place.
	if _, _, ok := c.get(leaseKey(subnet.MakeSubnetKey(l.Subnet, netip.Prefix{}))); !ok {
		t.Fatal("KeepLease deleted the lease on shutdown")
	}
}

func TestKeepLeaseRenewsWhenMarginExceedsTTL(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	// Margin 60m (the default) with TTL 4s: renew a third of the way
	// through, every 1.3 s, so the fourth renewal comes past the TTL.
	const ttl = 4 * time.Second
	m, log := c.loggedManager(Options{LeaseTTL: ttl})
	granted := time.Now()
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	keep(c, m, l)
	waitLog(t, log, leaseRenewed, 4)
	checkKept(t, c, l, granted, ttl)
}

// watchLeaseChange returns a channel that yields the next write to key
// (from the current revision on) that puts it on an etcd lease other than
// old.
func watchLeaseChange(c *cluster, key string, old int64) <-chan *mvccpb.KeyValue {
	resp, err := c.cli.Get(c.ctx(), key)
	if err != nil {
		c.t.Fatal(err)
	}
	ch := make(chan *mvccpb.KeyValue, 1)
	wch := c.cli.Watch(c.ctx(), key, clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		for wresp := range wch {
			for _, ev := range wresp.Events {
				if ev.Type == mvccpb.PUT && ev.Kv.Lease != old && ev.Kv.Lease != 0 {
					ch <- ev.Kv
					return
				}
			}
		}
	}()
	return ch
}

func TestKeepLeaseRetakesRevokedLease(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	m, log := c.loggedManager(Options{LeaseTTL: 30 * time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	key := leaseKey(subnet.MakeSubnetKey(l.Subnet, netip.Prefix{}))
	retaken := watchLeaseChange(c, key, l.LeaseID)
	done, _ := keep(c, m, l)
	waitLog(t, log, keeperWatching, 1) // the revocation is seen by the watch, not the first read
	if _, err := c.cli.Revoke(c.ctx(), clientv3.LeaseID(l.LeaseID)); err != nil {
		t.Fatal(err)
	}
	select {
	case kv := <-retaken:
		if string(kv.Value) != `{"PublicIP":"192.0.2.1","PublicIPv6":null}` {
			t.Fatalf("retaken with value %s", kv.Value)
		}
	case err := <-done:
		t.Fatalf("KeepLease returned %v instead of retaking the subnet", err)
	case <-time.After(eventDeadline):
		t.Fatalf("subnet not retaken within %v of the revocation", eventDeadline)
	}
}

func TestKeepLeaseTakenByAnother(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	m, log := c.loggedManager(Options{LeaseTTL: 30 * time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, _ := keep(c, m, l)
	waitLog(t, log, keeperWatching, 1)
	// Another live host's value, on its own etcd lease, replaces ours in
	// one write. (Without an etcd lease it would be an overwrite that
	// KeepLease writes back: TestKeepLeaseWritesBackOverwrites.)
	other, err := c.cli.Grant(c.ctx(), 60)
	if err != nil {
		t.Fatal(err)
	}
	c.put(leaseKey(subnet.MakeSubnetKey(l.Subnet, netip.Prefix{})), `{"PublicIP":"192.0.2.7","PublicIPv6":null}`, clientv3.WithLease(other.ID))
	select {
	case err := <-done:
		if !errors.Is(err, ErrLeaseTaken) || !strings.Contains(err.Error(), l.Subnet.String()) ||
			!strings.Contains(err.Error(), "192.0.2.7") {
			t.Fatalf("err = %v, want ErrLeaseTaken naming %s and 192.0.2.7", err, l.Subnet)
		}
	case <-time.After(eventDeadline):
		t.Fatal("KeepLease did not notice its subnet was taken")
	}
}

// recorder collects WatchLeases batches.
type recorder struct {
	c  *cluster
	ch chan []subnet.Event
}

func watch(c *cluster, m *Manager) (*recorder, context.CancelFunc) {
	r := &recorder{c: c, ch: make(chan []subnet.Event, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, func(ev []subnet.Event) { r.ch <- ev }) }()
	c.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			c.t.Errorf("WatchLeases returned %v", err)
		}
	})
	return r, cancel
}

// describe renders events as sorted "type subnet ip" strings.
func describe(evs []subnet.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type.String()+" "+e.Lease.Subnet.String()+" "+e.Lease.Attrs.PublicIP.String())
	}
	sort.Strings(out)
	return out
}

// The marker lease, written and deleted by expect: no test uses its subnet.
const (
	markerSubnet = "198.18.254.0-24"
	markerValue  = `{"PublicIP":"192.0.2.254","PublicIPv6":null}`
)

// expect waits for exactly want (in any order, across batches). To see
// that nothing more came, it then writes the marker lease and waits for
// its event, and deletes it and waits for that event: the watch reports
// changes in revision order, so whatever the writes before the marker
// caused has arrived by then.
func (r *recorder) expect(t *testing.T, want ...string) {
	t.Helper()
	var got []subnet.Event
	deadline := time.After(eventDeadline)
	for len(got) < len(want) {
		select {
		case evs := <-r.ch:
			got = append(got, evs...)
		case <-deadline:
			t.Fatalf("timed out: got %v, want %v", describe(got), want)
		}
	}
	r.c.put(leaseKey(markerSubnet), markerValue)
	got = append(got, r.until(t, subnet.EventAdded)...)
	if _, err := r.c.cli.Delete(r.c.ctx(), leaseKey(markerSubnet)); err != nil {
		t.Fatal(err)
	}
	got = append(got, r.until(t, subnet.EventRemoved)...)
	sort.Strings(want)
	if g := describe(got); strings.Join(g, "|") != strings.Join(want, "|") {
		t.Fatalf("events %v, want %v", g, want)
	}
}

// until reads batches until the marker's event of type typ and returns
// every other event read.
func (r *recorder) until(t *testing.T, typ subnet.EventType) []subnet.Event {
	t.Helper()
	marker := netip.MustParsePrefix(strings.Replace(markerSubnet, "-", "/", 1))
	var other []subnet.Event
	deadline := time.After(eventDeadline)
	for {
		select {
		case evs := <-r.ch:
			found := false
			for _, e := range evs {
				if e.Type == typ && e.Lease.Subnet == marker && !found {
					found = true
					continue
				}
				other = append(other, e)
			}
			if found {
				return other
			}
		case <-deadline:
			t.Fatalf("the marker lease's %v event did not come (other events: %v)", typ, describe(other))
		}
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
	// Both in one expect: on a loaded machine the expiry may come at any
	// moment after the addition is seen.
	r.expect(t, "added "+l.Subnet.String()+" 192.0.2.5", "removed "+l.Subnet.String()+" 192.0.2.5")
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
