//go:build !linux

package nftables

import (
	"context"
	"errors"
)

// Tables does nothing: nftables is Linux's (and knftables' netlink part
// builds only there); run stops before it on this system.
type Tables struct{}

// New fails: there is no nftables here.
func New(Options) (*Tables, error) { return nil, errors.New("nftables is only supported on Linux") }

// Setup does nothing.
func (*Tables) Setup(context.Context) error { return nil }

// Check does nothing.
func (*Tables) Check(context.Context) error { return nil }

// Delete has nothing to delete.
func Delete(context.Context) error { return nil }
