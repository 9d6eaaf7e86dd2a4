//go:build !linux

package leftover

import "errors"

// Remove is Linux's only: flannelu stops at start elsewhere.
func Remove(Options) error { return errors.New("leftover: Linux only") }
