package routetable

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Table holds the current Snapshot. Snapshot is lock-free and safe from
// any number of goroutines; Update and Replace serialize on a mutex, so
// concurrent writers are safe too (the usual writer is the single lease
// watcher).
type Table struct {
	mu  sync.Mutex // held by writers only
	cur atomic.Pointer[Snapshot]
}

// New returns an empty table.
func New() *Table {
	t := &Table{}
	t.cur.Store(build(nil))
	return t
}

// Snapshot returns the current immutable snapshot with one atomic load. A
// forwarder takes one per batch of packets; it stays valid (and unchanged)
// for as long as it is referenced, whatever writers do meanwhile.
func (t *Table) Snapshot() *Snapshot { return t.cur.Load() }

// Update publishes one new snapshot: the current peers minus remove, plus
// add. Removals are applied before additions, so a prefix in both ends up
// present (with the new values); a caller folding an ordered event list
// into a batch keeps only each prefix's last event. An add for a subnet
// already present replaces that peer; later entries in add win over
// earlier ones. Invalid peers are skipped and reported in the returned
// error (wrapping ErrInvalidPeer); the valid rest is still applied.
func (t *Table) Update(add []Peer, remove []netip.Prefix) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	next := make(map[netip.Prefix]Peer, len(old.peers)+len(add))
	for _, p := range old.peers {
		next[p.Subnet] = p
	}
	for _, pfx := range remove {
		if pfx.IsValid() {
			delete(next, pfx.Masked())
		}
	}
	err := addAll(next, add)
	t.cur.Store(build(next))
	return err
}

// Replace publishes a snapshot holding exactly peers (after a full re-list
// of the leases). Invalid peers are skipped and reported as in Update.
func (t *Table) Replace(peers []Peer) error {
	next := make(map[netip.Prefix]Peer, len(peers))
	err := addAll(next, peers)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur.Store(build(next))
	return err
}

func addAll(m map[netip.Prefix]Peer, add []Peer) error {
	var errs []error
	for _, p := range add {
		n, err := normalize(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m[n.Subnet] = n
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: skipped %d: %w", ErrInvalidPeer, len(errs), errors.Join(errs...))
}
