//go:build !linux

package vxlan

import (
	"errors"

	"github.com/flannelu/flannelu/backend"
)

// Backend is the vxlan backend; on this system New always fails.
type Backend = backend.Unsupported

// New fails: the vxlan backend programs Linux's VXLAN device through netlink.
func New(*backend.ExternalInterface, Options) (*Backend, error) {
	return nil, errors.New("vxlan backend: only supported on Linux")
}
