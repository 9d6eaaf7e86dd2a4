package subnet

import (
	"testing"
	"time"
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
	var evs []Event
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
