package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/etcd"
)

// loops are the goroutines of a running daemon; the first fatal error
// stops them all.
type loops struct {
	wg     sync.WaitGroup
	cancel context.CancelCauseFunc // ends the loops and the health server
	// work is all there is but the health server (Run's), which a process
	// that handed over keeps serving (--after-handover=wait).
	work     context.Context
	stopWork context.CancelCauseFunc
}

// goFatal runs fn in work; an error it returns before work ends stops
// every loop, named by name.
func (l *loops) goFatal(name string, fn func(context.Context) error) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := fn(l.work); err != nil && l.work.Err() == nil {
			l.cancel(fmt.Errorf("%s: %w", name, err))
		}
	}()
}

// runLoops runs the lease keeper, the watcher (its events through the
// validator, the accepted peers into the peer filter), the set-up of the
// rules and then subnet.env (and its retry while it fails), the keepers of
// rules and routes, the backend, whose state /readyz reports, and the
// hand-over; the first fatal error stops them all.
func (n *node) runLoops(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l := &loops{cancel: cancel}
	l.work, l.stopWork = context.WithCancelCause(ctx)
	defer l.stopWork(nil)
	l.goFatal("lease", func(ctx context.Context) error { return n.store.KeepLease(ctx, n.cfg, n.lease) })
	l.goFatal("rules", n.keepRules)
	// The backend runs only once it has the peers of the first snapshot:
	// a kernel backend's reconcile would otherwise take the empty peer set
	// of a restart for the truth and delete every peer's entries.
	synced := make(chan struct{})
	l.goFatal("watch", func(ctx context.Context) error { return n.watch(ctx, synced) })
	running := make(chan struct{}) // closed when the backend runs
	backendDone := make(chan struct{})
	l.goFatal("backend", func(ctx context.Context) error { return n.runBackend(ctx, synced, running, backendDone) })
	n.goHandOver(l, running, backendDone)
	<-ctx.Done()
	l.wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) && !errors.Is(err, errHandedOver) {
		if errors.Is(err, subnet.ErrHostRemoved) || errors.Is(err, etcd.ErrLeaseTaken) {
			withdrawPeers(n.be, n.valid, n.log, err)
		}
		return err
	}
	return nil
}

// keepRules sets the rules up, then writes subnet.env, then keeps both
// (and the other keepers) until ctx ends. The rules go in before
// subnet.env, as flanneld does: a pod the CNI plugin starts from it
// masquerades from its first packet. Both go in beside the backend's
// start, not before it: a node taken over from flanneld or a predecessor
// forwards as soon as the backend runs, and its rules, whose check takes
// most of a second on a loaded host, are in place already.
func (n *node) keepRules(ctx context.Context) error {
	n.rules.Setup(ctx) //nolint:errcheck // logged; /readyz reports it until a resync succeeds
	n.ready.set(condRules, "in place", n.rules.InPlace)
	n.env.write() // a failure is retried by env.keep
	n.ready.set(condSubnetEnv, "written", n.env.Err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); n.env.keep(ctx) }()
	n.keep.Run(ctx)
	wg.Wait()
	return nil
}

// watch hands the backend the valid peers of each batch of lease events
// (never this host's lease) and the peer filter the accepted ones; synced
// is closed after the first snapshot.
func (n *node) watch(ctx context.Context, synced chan<- struct{}) error {
	var once sync.Once
	return n.store.WatchLeases(ctx, func(evs []subnet.Event) {
		peers := n.valid.Filter(evs)
		if n.filter != nil {
			n.filter.sync(n.valid.Accepted())
		}
		if len(peers) > 0 {
			n.be.HandleEvents(ctx, peers)
		}
		once.Do(func() { close(synced) })
	})
}

// runBackend runs the backend once the first snapshot is in, closing
// running when it starts and done when it returns.
func (n *node) runBackend(ctx context.Context, synced <-chan struct{}, running, done chan<- struct{}) error {
	defer close(done)
	select {
	case <-synced:
	case <-ctx.Done():
		return nil
	}
	afterFirstSnapshot(ctx, n.be, n.log)
	n.ready.backend.Store(backendRunning)
	defer n.ready.backend.Store(backendStopped)
	close(running)
	n.log.Info("backend running", "backend", n.cfg.BackendType)
	go freeStartupMemory()
	return n.be.Run(ctx)
}

// goHandOver runs this process's part in hand-overs once the backend
// forwards: the predecessor leaves, and a successor may come. Leaving
// returns once the backend has stopped: a successor that opens the device
// anew (ipip) finds it free.
func (n *node) goHandOver(l *loops, running, backendDone <-chan struct{}) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		leave := func() { handedOver(n.o, l.cancel, l.stopWork, n.log); <-backendDone }
		n.ho.run(l.work, running, n.lease, n.be, leave, func(err error) { l.cancel(fmt.Errorf("hand-over: %w", err)) })
	}()
}
