package subnet

import (
	"errors"
	"fmt"
	"net/netip"
)

// UsableUnicast returns nil when a is an address other hosts can send
// unicast to, else an error saying what a is instead (loopback,
// unspecified, multicast, link-local, broadcast or "this network"
// 0.0.0.0/8). The lease validator, --public-ip and --iface share it.
func UsableUnicast(a netip.Addr) error {
	a = a.Unmap()
	var what string
	switch {
	case !a.IsValid():
		return errors.New("no address")
	case a.IsUnspecified():
		what = "the unspecified address"
	case a.IsLoopback():
		what = "a loopback address"
	case a.IsMulticast():
		what = "a multicast address"
	case a.IsLinkLocalUnicast():
		what = "a link-local address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		what = "the broadcast address"
	case a.Is4() && a.As4()[0] == 0:
		what = `in "this network" 0.0.0.0/8`
	default:
		return nil
	}
	return fmt.Errorf("%s is %s, which other hosts cannot reach", a, what)
}
