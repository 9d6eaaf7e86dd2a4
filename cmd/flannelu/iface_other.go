//go:build !linux

package main

import (
	"errors"

	"github.com/flannelu/flannelu/backend"
)

// lookupExtIface fails: the interface is chosen through Linux's netlink.
// run stops before it on this system.
func lookupExtIface(*options, families) (*backend.ExternalInterface, error) {
	return nil, errors.New("choosing the external interface is only supported on Linux")
}
