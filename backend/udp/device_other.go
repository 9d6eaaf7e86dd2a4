//go:build !linux

package udp

import (
	"errors"
	"net/netip"
	"time"
)

// deviceLayout is what configureDevice would give the TUN.
type deviceLayout struct {
	name                           string
	mtu, mtu6                      int
	addr, network, addr6, network6 netip.Prefix
}

// configureDevice fails: the TUN device is configured with Linux's netlink.
// Start never gets here, tun.Open having failed first.
func configureDevice(deviceLayout) (int, error) {
	return 0, errors.New("udp backend: TUN devices are only supported on Linux")
}

// run fails: Start never succeeds here, so Run never calls it.
func (w *worker) run(time.Duration) error {
	return errors.New("udp backend: the forwarding loop is only supported on Linux")
}

// deviceTxDropped: there is no device here.
func deviceTxDropped(string) uint64 { return 0 }
