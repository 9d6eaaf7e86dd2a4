//go:build !linux

package daemon

import (
	"errors"
	"log/slog"

	"github.com/flannelu/flannelu/backend"
)

// lookupExtIface fails: the interface is chosen through Linux's netlink.
// run stops before it on this system.
func lookupExtIface(*Options, families, *slog.Logger) (*backend.ExternalInterface, error) {
	return nil, errors.New("choosing the external interface is only supported on Linux")
}
