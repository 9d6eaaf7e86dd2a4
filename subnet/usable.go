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
		what = "unspecified"
	case a.IsLoopback():
		what = "loopback"
	case a.IsMulticast():
		what = "multicast"
	case a.IsLinkLocalUnicast():
		what = "link-local"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		what = "broadcast"
	case a.Is4() && a.As4()[0] == 0:
		what = `"this network" (0.0.0.0/8)`
	default:
		return nil
	}
	return fmt.Errorf("%s is a %s address, which other hosts cannot reach", a, what)
}
