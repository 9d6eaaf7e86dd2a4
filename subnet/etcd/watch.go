package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchLeases reports every lease under <prefix>/subnets/ to handle until
// ctx is done, then returns nil. It first delivers EventAdded for every
// valid lease (reservations and this host's own included: the caller
// filters), then the changes as they happen, all events of one etcd watch
// response in one call. A rewrite with identical attributes is not an
// event. When the watch breaks (compaction, etcd restart, leader loss) it
// lists again and delivers only the differences from what it had
// reported, so no change is lost or duplicated. Malformed keys and values
// are skipped and counted (see MalformedLeases); a lease overwritten with
// a malformed value stays reported with its last valid value until the key
// is deleted or gets a valid one again: an unparsable write says nothing
// about where the subnet now is, and the key's owner restores its value
// within a round trip (KeepLease), so peers must not cut traffic for it.
//
// handle runs on WatchLeases' goroutine, one call at a time; it owns the
// slice it is given. While it blocks, etcd changes queue up.
func (m *Manager) WatchLeases(ctx context.Context, handle func([]subnet.Event)) error {
	w := &watcher{m: m, handle: handle, known: make(map[string]subnet.Lease)}
	for {
		rev, err := w.resync(ctx)
		if err == nil {
			if m.testHookAfterList != nil {
				m.testHookAfterList(rev)
			}
			err = w.follow(ctx, rev+1)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, subnet.ErrUnavailable) { // an outage is logged by the tracker
			m.log.Info("lease watch interrupted, listing again", "error", err)
		}
		if !sleep(ctx, resyncDelay(err)) {
			return nil
		}
	}
}

// resyncDelay: a compaction is resolved by listing at once; anything else
// (etcd down) waits a little so a dead etcd is not polled in a tight loop.
func resyncDelay(err error) time.Duration {
	if errors.Is(err, errCompacted) {
		return 0
	}
	return retryDelay / 4
}

var errCompacted = errors.New("watch revision compacted")

// watcher is WatchLeases' state: the leases last reported, by key.
type watcher struct {
	m      *Manager
	handle func([]subnet.Event)
	known  map[string]subnet.Lease
	listed bool // the first list was reported (even when empty)
}

// resync lists all leases and reports the difference from known.
func (w *watcher) resync(ctx context.Context) (int64, error) {
	resp, err := w.m.get(ctx, w.m.subnetsDir, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list leases: %w", err)
	}
	var events []subnet.Event
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		seen[key] = true
		if l, ok := w.m.validLease(kv); ok {
			events = w.put(events, key, l)
		}
	}
	for key, old := range w.known {
		if !seen[key] {
			delete(w.known, key)
			events = append(events, subnet.Event{Type: subnet.EventRemoved, Lease: old, Key: key})
		}
	}
	if len(events) > 0 || !w.listed {
		w.listed = true
		w.handle(events)
	}
	return resp.Header.Revision, nil
}

// put records a valid lease and appends the event it causes, if any. A
// key deleted and created again between two lists changed its creation
// order, which the Validator ranks by: that is a change too.
func (w *watcher) put(events []subnet.Event, key string, l subnet.Lease) []subnet.Event {
	old, had := w.known[key]
	w.known[key] = l
	switch {
	case !had:
		return append(events, subnet.Event{Type: subnet.EventAdded, Lease: l, Key: key})
	case !old.Attrs.Equal(l.Attrs) || old.Created != l.Created:
		return append(events, subnet.Event{Type: subnet.EventChanged, Lease: l, Key: key})
	}
	return events
}

// follow watches from rev until the watch breaks; it always returns an error.
func (w *watcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.m.cli.Watch(wctx, w.m.subnetsDir, clientv3.WithPrefix(), clientv3.WithRev(rev))
	for wresp := range wch {
		if wresp.CompactRevision != 0 {
			return fmt.Errorf("%w at %d", errCompacted, wresp.CompactRevision)
		}
		if err := wresp.Err(); err != nil {
			return err
		}
		var events []subnet.Event
		for _, ev := range wresp.Events {
			events = w.apply(events, ev)
		}
		if len(events) > 0 {
			w.handle(events)
		}
	}
	return errors.New("watch channel closed")
}

func (w *watcher) apply(events []subnet.Event, ev *clientv3.Event) []subnet.Event {
	key := string(ev.Kv.Key)
	if ev.Type == mvccpb.DELETE {
		if old, had := w.known[key]; had {
			delete(w.known, key)
			events = append(events, subnet.Event{Type: subnet.EventRemoved, Lease: old, Key: key})
		}
		return events
	}
	if l, ok := w.m.validLease(ev.Kv); ok {
		return w.put(events, key, l)
	}
	return events // malformed: the last valid value stays (see WatchLeases)
}
