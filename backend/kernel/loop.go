package kernel

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// DefaultReconcileInterval is flannel's: missing routes come back within 10 s.
const DefaultReconcileInterval = 10 * time.Second

// Reconcile calls sync every interval until ctx is done, and returns nil
// then. The first call comes one interval after the start, not at once: a
// restarted daemon starts Run before its first peer events arrive, and a
// sync against an empty desired state would delete every peer's entries
// and stop forwarding. A failing sync is logged (it is retried
// on the next tick) and never stops the loop: a transient netlink error
// must not take the node's data path down. interval <= 0 means
// DefaultReconcileInterval.
func Reconcile(ctx context.Context, interval time.Duration, log *slog.Logger, sync func(context.Context) error) error {
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	log.Debug(ReconcileStarted, "interval", interval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		switch err := sync(ctx); {
		case err == nil:
			log.Debug(Reconciled)
		case ctx.Err() == nil:
			log.Warn("reconcile failed, retrying next interval", "interval", interval, "error", err)
		}
	}
}

// Each calls fn on every item, in order, and joins the errors: one
// reconcile pass over a backend's families, of which one failing does not
// keep the others from theirs.
func Each[T any](items []T, fn func(T) error) error {
	var errs []error
	for _, it := range items {
		errs = append(errs, fn(it))
	}
	return errors.Join(errs...)
}

// Locked calls fn with mu held: a backend's reconcile pass, serialized
// with the events it handles.
func Locked(mu sync.Locker, fn func() error) error {
	mu.Lock()
	defer mu.Unlock()
	return fn()
}

// The debug messages of Reconcile: the loop is running (its first pass
// comes one interval later), and a pass finished without error. Tests
// wait for them rather than for the clock.
const (
	ReconcileStarted = "reconcile loop started"
	Reconciled       = "reconciled"
)
