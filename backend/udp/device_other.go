//go:build !linux

package udp

import (
	"errors"
	"net/netip"
)

// configureDevice fails: the TUN device is configured with Linux's netlink.
// Start never gets here, tun.Open having failed first.
func configureDevice(string, netip.Prefix, int, netip.Prefix) error {
	return errors.New("udp backend: TUN devices are only supported on Linux")
}

// run fails: Start never succeeds here, so Run never calls it.
func (w *worker) run() error {
	return errors.New("udp backend: the forwarding loop is only supported on Linux")
}

// deviceTxDropped: there is no device here.
func deviceTxDropped(string) uint64 { return 0 }
