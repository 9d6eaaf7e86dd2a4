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

// Update publishes one new snapshot: the current peers minus remove (by
// Peer.ID), plus add. Removals are applied before additions, so a prefix in both ends up
// present (with the new values); a caller folding an ordered event list
// into a batch keeps only each prefix's last event. An add for a subnet
// already present replaces that peer; later entries in add win over
// earlier ones. Invalid peers are skipped and reported in the returned
// error (wrapping ErrInvalidPeer); the valid rest is still applied.
// The cost is O(n) in the table size, so batch events.
func (t *Table) Update(add []Peer, remove []netip.Prefix) error {
	adds, err := normalizeAll(add)
	gone := make(map[netip.Prefix]struct{}, len(remove)+len(adds))
	for _, pfx := range remove {
		if pfx.IsValid() {
			gone[pfx.Masked()] = struct{}{}
		}
	}
	for _, p := range adds {
		gone[p.ID()] = struct{}{} // replaced by the new value
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	next := make([]Peer, 0, len(old.peers)+len(adds))
	for _, p := range old.peers {
		if _, ok := gone[p.ID()]; !ok {
			next = append(next, p)
		}
	}
	t.cur.Store(build(append(next, adds...)))
	return err
}

// Replace publishes a snapshot holding exactly peers (after a full re-list
// of the leases). Invalid peers are skipped and reported as in Update.
func (t *Table) Replace(peers []Peer) error {
	next, err := normalizeAll(peers)
	s := build(next)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur.Store(s)
	return err
}

// normalizeAll validates peers into a new slice with one entry per ID,
// the last one given winning.
func normalizeAll(peers []Peer) ([]Peer, error) {
	out := make([]Peer, 0, len(peers))
	at := make(map[netip.Prefix]int, len(peers))
	var errs []error
	for _, p := range peers {
		n, err := normalize(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k := n.ID()
		if i, dup := at[k]; dup {
			out[i] = n
			continue
		}
		at[k] = len(out)
		out = append(out, n)
	}
	if len(errs) == 0 {
		return out, nil
	}
	return out, fmt.Errorf("%w: skipped %d: %w", ErrInvalidPeer, len(errs), errors.Join(errs...))
}
