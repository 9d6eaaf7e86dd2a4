//go:build !linux

package daemon

import (
	"context"
	"log/slog"

	"github.com/flannelu/flannelu/subnet"
)

// blackholeKeeper does nothing: run stops before it on this system.
type blackholeKeeper struct{}

func blackholeRoutes(*Options, *subnet.Config, subnet.Lease, *slog.Logger) *blackholeKeeper {
	return &blackholeKeeper{}
}

func (*blackholeKeeper) Run(context.Context) {}
