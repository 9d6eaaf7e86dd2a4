//go:build !linux

package hostgw

import (
	"errors"

	"github.com/flannelu/flannelu/backend"
)

// Backend is the host-gw backend; on this system New always fails.
type Backend = backend.Unsupported

// New fails: the host-gw backend programs Linux routes through netlink.
func New(*backend.ExternalInterface, Options) (*Backend, error) {
	return nil, errors.New("host-gw backend: only supported on Linux")
}
