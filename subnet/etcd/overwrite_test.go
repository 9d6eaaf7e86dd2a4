package etcd

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A peer's lease overwritten with garbage stays reported with its last
// valid value: no event, so peers keep routing while its owner restores
// it; a valid value or a delete is reported as usual.
func TestWatchKeepsLastValidOnMalformedOverwrite(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	c.put(leaseKey("198.18.2.0-24"), valB)
	m := c.manager(Options{})
	r, _ := watch(c, m)
	r.expect(t, "added 198.18.2.0/24 192.0.2.2")
	c.put(leaseKey("198.18.2.0-24"), `garbage`)
	c.put(leaseKey("198.18.2.0-24"), valB) // restored as it was: still no event
	c.put(leaseKey("198.18.2.0-24"), `{"PublicIP":"x"}`)
	c.put(leaseKey("198.18.2.0-24"), valB2)
	r.expect(t, "changed 198.18.2.0/24 192.0.2.22")
	if n := m.MalformedLeases(); n != 2 {
		t.Fatalf("MalformedLeases = %d, want 2", n)
	}
	c.put(leaseKey("198.18.2.0-24"), `garbage`)
	if _, err := c.cli.Delete(c.ctx(), leaseKey("198.18.2.0-24")); err != nil {
		t.Fatal(err)
	}
	r.expect(t, "removed 198.18.2.0/24 192.0.2.22")
}

// Events carry the etcd key and the key's creation revision, which the
// Validator ranks contested subnets by.
func TestWatchEventsCarryKeyAndCreated(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	c.put(leaseKey("198.18.2.0-24"), valB)
	r, _ := watch(c, c.manager(Options{}))
	var evs []subnet.Event
	select {
	case evs = <-r.ch:
	case <-time.After(15 * time.Second):
		t.Fatal("no first list")
	}
	resp, err := c.cli.Get(c.ctx(), leaseKey("198.18.2.0-24"))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Key != leaseKey("198.18.2.0-24") || evs[0].Lease.Created != resp.Kvs[0].CreateRevision {
		t.Fatalf("events %+v, want one with key %s and Created %d", evs, leaseKey("198.18.2.0-24"), resp.Kvs[0].CreateRevision)
	}
}

// waitKey waits until key holds want on an etcd lease (a live one:
// renewable), failing the test if KeepLease returns first.
func waitKey(t *testing.T, c *cluster, done <-chan error, key, want string) int64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if val, lease, ok := c.get(key); ok && val == want && lease != 0 {
			return lease
		}
		select {
		case err := <-done:
			t.Fatalf("KeepLease returned %v instead of writing its lease back", err)
		default:
		}
		if time.Now().After(deadline) {
			val, lease, ok := c.get(key)
			t.Fatalf("%s not restored in 15s: %q on lease %x (present %v)", key, val, lease, ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Whatever overwrites our key, short of another live host's lease, is
// written back on our own etcd lease, and KeepLease goes on.
func TestKeepLeaseWritesBackOverwrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	m := c.manager(Options{LeaseTTL: 60 * time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	key := leaseKey(subnet.MakeSubnetKey(l.Subnet, netip.Prefix{}))
	// No wait for the keeper to start: a write before its first read
	// is found by that read, one after it by its watch.
	done, _ := keep(c, m, l)
	for _, tc := range []struct {
		name  string
		write func()
	}{
		{"garbage without an etcd lease", func() { c.put(key, "garbage") }},
		{"another host's value without an etcd lease", func() { c.put(key, valB) }},
		{"garbage on our own etcd lease", func() { c.put(key, `{"PublicIP":"127.0.0.1"}`, clientv3.WithLease(clientv3.LeaseID(l.LeaseID))) }},
		{"deleted", func() {
			if _, err := c.cli.Delete(c.ctx(), key); err != nil {
				t.Fatal(err)
			}
		}},
		{"1 MB of garbage", func() { c.put(key, strings.Repeat("x", 1<<20)) }},
	} {
		tc.write()
		if lease := waitKey(t, c, done, key, valA); lease != l.LeaseID {
			t.Fatalf("%s: restored on etcd lease %x, want ours %x (still alive)", tc.name, lease, l.LeaseID)
		}
	}
	// Revoked: our etcd lease is gone with the key; a new one is granted.
	if _, err := c.cli.Revoke(c.ctx(), clientv3.LeaseID(l.LeaseID)); err != nil {
		t.Fatal(err)
	}
	if lease := waitKey(t, c, done, key, valA); lease == l.LeaseID {
		t.Fatal("restored on the revoked etcd lease")
	}
}
