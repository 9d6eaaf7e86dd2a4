package incumbent

import (
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tunHeld: the TUN device exists with a queue attached (the kernel turns
// its carrier on with the first queue and off with the last).
func tunHeld(name string) bool {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return false
	}
	_, isTUN := link.(*netlink.Tuntap)
	return isTUN && link.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
}
