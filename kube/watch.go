package kube

import (
	"context"

	"github.com/flannelu/flannelu/subnet"
)

// WatchLeases reports the leases of the nodes a flannel manages (those
// annotated kube-subnet-manager=true, this host's own included: the caller
// filters): first one batch with every lease in the informer's synced
// cache (possibly empty), then the changes. A node whose backend type,
// backend data or public IP changed is EventChanged; a deleted node, one
// that lost the annotation or whose lease became malformed is
// EventRemoved. Each change is computed against what was reported, from
// the informer's cache, so a relist after an API server restart or a 410
// Gone reports exactly the differences: nothing lost, nothing repeated.
func (s *Store) WatchLeases(ctx context.Context, handle func([]subnet.Event)) error {
	cfg, err := s.config(ctx)
	if err != nil {
		return err
	}
	f, err := s.follow("")
	if err != nil {
		return err
	}
	defer f.stop()
	if !f.synced(ctx) {
		return nil
	}
	w := &watcher{s: s, cfg: cfg, known: map[string]subnet.Lease{}}
	handle(w.update(f.queued())) // the synced list, even when empty
	for {
		names, ok := f.next(ctx)
		if !ok {
			return nil
		}
		if events := w.update(names); len(events) > 0 {
			handle(events)
		}
	}
}

// watcher is WatchLeases' state: the lease last reported per node.
type watcher struct {
	s     *Store
	cfg   *subnet.Config
	known map[string]subnet.Lease
}

// update compares the cached state of the named nodes with what was
// reported and returns the events that make up the difference.
func (w *watcher) update(names []string) []subnet.Event {
	var events []subnet.Event
	for _, name := range names {
		var l subnet.Lease
		have := false
		if n := w.s.cachedNode(name); n != nil && w.s.ann.Managed(n) {
			l, have = w.s.peerLease(n, w.cfg)
		}
		old, had := w.known[name]
		switch {
		case have && had && (old.Subnet != l.Subnet || old.IPv6Subnet != l.IPv6Subnet):
			// Backends key peers by subnet: a node that came back with
			// another podCIDR is a removal and an addition.
			events = append(events, subnet.Event{Type: subnet.EventRemoved, Lease: old}, subnet.Event{Type: subnet.EventAdded, Lease: l})
		case have && had && !old.Attrs.Equal(l.Attrs):
			events = append(events, subnet.Event{Type: subnet.EventChanged, Lease: l})
		case have && !had:
			events = append(events, subnet.Event{Type: subnet.EventAdded, Lease: l})
		case !have && had:
			events = append(events, subnet.Event{Type: subnet.EventRemoved, Lease: old})
		}
		if have {
			w.known[name] = l
		} else {
			delete(w.known, name)
		}
	}
	return events
}
