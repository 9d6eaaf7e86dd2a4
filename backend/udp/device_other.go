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
