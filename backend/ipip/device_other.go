//go:build !linux

package ipip

import (
	"errors"

	"github.com/flannelu/flannelu/subnet"
)

// errNoIPIP is never returned here: initKernel fails first.
var errNoIPIP = errors.New("no ipip device")

type kernelState struct{}

var errNotLinux = errors.New("ipip backend: only supported on Linux")

func (b *Backend) initKernel() error              { return errNotLinux }
func (b *Backend) startKernel(subnet.Lease) error { return errNotLinux }
func (b *Backend) newRouters() error              { return errNotLinux }
