package handover

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/flannelu/flannelu/handover/incumbent"
)

// Search says where to look for what runs on this host before a start.
type Search struct {
	Addr     Addr // the hand-over socket
	On       bool // the socket is in use (--handover-socket is not "none")
	Identity Identity
	Timeout  time.Duration // bounds a hand-over's exchange, as in Find
	// Incumbent says where a flanneld of this host's network shows.
	Incumbent incumbent.Options
	Log       *slog.Logger
}

// Take looks, before the caller touches anything, at what runs on this
// host: a flannelu that hands over (returned), one that refuses (another
// network on the same subnet file, or another device mode: waited for), a
// flanneld (waited for). A refusal from a process that shares nothing with
// this one (another network namespace, another user) is a normal start.
// It returns nil, nil when nothing runs (any more), and ctx's error when
// ctx ends while it waits.
func Take(ctx context.Context, s Search) (*Predecessor, error) {
	for {
		if s.On {
			pred, err := Find(ctx, s.Addr, s.Identity, s.Timeout, s.Log)
			var refused *Refusal
			switch {
			case errors.As(err, &refused) && refused.Foreign:
			case errors.As(err, &refused):
				if err := refused.Wait(ctx); err != nil {
					return nil, err
				}
				s.Log.Info("the flannelu that refused the hand-over has stopped; looking again")
				continue
			case err != nil:
				return nil, err
			case pred != nil:
				return pred, nil
			}
		}
		seen := incumbent.Find(ctx, s.Incumbent)
		if seen == nil {
			return nil, nil
		}
		seen.Log(s.Log)
		since := time.Now()
		if err := seen.Wait(ctx); err != nil {
			return nil, err
		}
		s.Log.Info("flanneld has stopped: starting", "waited", time.Since(since).Round(time.Millisecond))
	}
}
