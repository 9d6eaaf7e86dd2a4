//go:build !linux

package wireguard

import (
	"errors"

	"github.com/flannelu/flannelu/backend"
)

// Backend is the wireguard backend; on this system New always fails.
type Backend = backend.Unsupported

// New fails: the wireguard backend programs Linux devices and routes.
func New(*backend.ExternalInterface, Options) (*Backend, error) {
	return nil, errors.New("wireguard backend: only supported on Linux")
}
