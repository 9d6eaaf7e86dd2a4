//go:build !linux

package backend

import (
	"context"
	"errors"

	"github.com/flannelu/flannelu/subnet"
)

// Unsupported is the Backend type of a backend on a system it cannot run
// on (its _other.go file aliases it), so that the daemon builds
// everywhere. Such a backend's New returns an error and never a value, so
// these methods never run.
type Unsupported struct{}

var _ Backend = (*Unsupported)(nil)

func (*Unsupported) Init(context.Context) (subnet.LeaseAttrs, error) {
	return subnet.LeaseAttrs{}, errors.ErrUnsupported
}
func (*Unsupported) MTU() int                                     { return 0 }
func (*Unsupported) Start(context.Context, subnet.Lease) error    { return errors.ErrUnsupported }
func (*Unsupported) HandleEvents(context.Context, []subnet.Event) {}
func (*Unsupported) Run(context.Context) error                    { return errors.ErrUnsupported }
