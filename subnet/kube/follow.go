package kube

import (
	"context"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// follower queues the names of the nodes that changed in the informer's
// cache, each name once however often it changed (client-go's workqueue),
// for one reader that then reads the nodes from the cache. A name queued
// with retry comes back after a growing delay: a failed patch is retried
// without polling.
type follower struct {
	queue workqueue.TypedRateLimitingInterface[string]
	reg   cache.ResourceEventHandlerRegistration
	s     *Store
	// depth, when set, records the queue's length now and at most (the
	// watch's queue: flannelu_store_queue_depth and _max).
	depth *queueDepth
}

// queueDepth is a queue's length, now and the most it has been.
type queueDepth struct{ now, max atomic.Int64 }

func (d *queueDepth) set(n int) {
	if d == nil {
		return
	}
	d.now.Store(int64(n))
	for m := d.max.Load(); int64(n) > m && !d.max.CompareAndSwap(m, int64(n)); m = d.max.Load() {
	}
}

// retryMin and retryMax bound the delay before a failed step on a node
// (a patch the API server did not take) is tried again.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// follow starts queueing the changes of every node (only == "") or of
// one node. Until stop, the informer replays its cache into the queue
// first, then every change. depth, when not nil, tracks the queue's
// length; it is set here, before the informer's handler can read it.
func (s *Store) follow(only string, depth *queueDepth) (*follower, error) {
	f := &follower{
		s:     s,
		depth: depth,
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryMin, retryMax)),
	}
	add := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err == nil && (only == "" || key == only) {
			f.queue.Add(key)
			f.depth.set(f.queue.Len())
		}
	}
	reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj any) { add(obj) },
		DeleteFunc: add,
	})
	if err != nil {
		f.queue.ShutDown()
		return nil, err
	}
	f.reg = reg
	return f, nil
}

// synced waits until the informer has listed the nodes and replayed them
// into the queue; false when ctx ended first.
func (f *follower) synced(ctx context.Context) bool {
	return WaitSynced(ctx, f.reg.HasSynced)
}

// syncPoll is how often WaitSynced looks: client-go's WaitForCacheSync
// looks every 100 ms, flanneld every second, and a start-up waits for
// the informer three times (the daemon, the lease, the peers): up to a
// second of a start that otherwise takes a few hundred milliseconds.
const syncPoll = 5 * time.Millisecond

// WaitSynced waits until synced reports true (an informer's or a handler
// registration's HasSynced, a cheap read) and returns true, or false once
// ctx has ended.
func WaitSynced(ctx context.Context, synced func() bool) bool {
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for !synced() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// next blocks until names are queued and returns all of them, or returns
// false once ctx has ended.
func (f *follower) next(ctx context.Context) ([]string, bool) {
	stop := context.AfterFunc(ctx, f.queue.ShutDown)
	defer stop()
	name, shutdown := f.queue.Get()
	if shutdown {
		return nil, false
	}
	f.queue.Done(name)
	names := append([]string{name}, f.queued()...)
	f.depth.set(0)
	return names, true
}

// queued returns the names queued now, without waiting.
func (f *follower) queued() []string {
	var names []string
	for f.queue.Len() > 0 {
		name, shutdown := f.queue.Get()
		if shutdown {
			break
		}
		names = append(names, name)
		f.queue.Done(name)
	}
	return names
}

// retry queues name again after the next delay of its backoff; done
// resets that backoff after a success.
func (f *follower) retry(name string) { f.queue.AddRateLimited(name) }
func (f *follower) done(name string)  { f.queue.Forget(name) }

// stop ends the queueing.
func (f *follower) stop() {
	f.s.informer.RemoveEventHandler(f.reg) //nolint:errcheck // only fails for a handler never added
	f.queue.ShutDown()
}
