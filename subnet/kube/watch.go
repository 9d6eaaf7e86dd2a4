package kube

import (
	"context"

	"github.com/flannelu/flannelu/subnet"
)

// WatchLeases reports the leases of the nodes a flannel manages (those
// annotated kube-subnet-manager=true, this host's own included: the caller
// filters): first one batch with every lease in the informer's synced
// cache (possibly empty), then the changes. A node whose backend type,
// backend data or public IP changed is EventChanged; a deleted node, or
// one that lost the annotation, is EventRemoved. A node whose lease became
// malformed is counted and logged, and its last valid lease stays
// reported, as with etcd. Events are keyed by node name and ordered
// (Lease.Created) by the node's creation time. Each change is computed
// against what was reported, from the informer's cache, so a relist after
// an API server restart or a 410 Gone reports exactly the differences:
// nothing lost, nothing repeated.
func (s *Store) WatchLeases(ctx context.Context, handle func([]subnet.Event)) error {
	cfg, err := s.config(ctx)
	if err != nil {
		return err
	}
	f, err := s.follow("", &s.queue)
	if err != nil {
		return err
	}
	defer f.stop()
	if !f.synced(ctx) {
		return nil
	}
	w := &watcher{s: s, cfg: cfg, known: map[string]subnet.Lease{}}
	handle(w.update(f.queued())) // the synced list, even when empty
	s.queue.max.Store(0)         // the most since: the first list queued every node
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
		n := w.s.cachedNode(name)
		old, had := w.known[name]
		if n == nil || !w.s.ann.Managed(n) {
			if had {
				delete(w.known, name)
				events = append(events, subnet.Event{Type: subnet.EventRemoved, Lease: old, Key: name})
			}
			continue
		}
		l, ok := w.s.peerLease(n, w.cfg)
		if !ok {
			continue // malformed: the last valid lease stays (see WatchLeases)
		}
		l.Created = n.CreationTimestamp.Unix()
		w.known[name] = l
		switch {
		case !had:
			events = append(events, subnet.Event{Type: subnet.EventAdded, Lease: l, Key: name})
		case old.Subnet != l.Subnet || old.IPv6Subnet != l.IPv6Subnet:
			// Backends key peers by subnet: a node registered again with
			// another podCIDR is a removal and an addition.
			events = append(events, subnet.Event{Type: subnet.EventRemoved, Lease: old, Key: name},
				subnet.Event{Type: subnet.EventAdded, Lease: l, Key: name})
		case !old.Attrs.Equal(l.Attrs) || old.Created != l.Created:
			events = append(events, subnet.Event{Type: subnet.EventChanged, Lease: l, Key: name})
		}
	}
	return events
}
