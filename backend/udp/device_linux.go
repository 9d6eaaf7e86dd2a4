package udp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
)

// tunQueueLen is the TUN's queue towards flannelu, Linux's default for an
// Ethernet device (a TUN gets 500): a burst from the pods while the
// forwarder is not running (descheduled on a busy machine) waits there
// instead of being dropped (flannelu_tun_tx_dropped_packets_total).
// Measured, 64-byte UDP at the sender's maximum (81-101 kpps), two runs
// each: 500 lost 1.6 % and 21.5 %, 1000 lost 0.2 % and 0, 4000 lost 0
// and 0. 1000 bounds what a queue of 64 KiB super-packets can hold
// (--udp-offload) to 64 MiB.
const tunQueueLen = 1000

// deviceLayout is what configureDevice gives the TUN; a family's fields
// are zero when the network does not carry it.
type deviceLayout struct {
	name            string
	mtu             int
	addr, network   netip.Prefix // IPv4: the lease's network address /32, the whole Network
	addr6, network6 netip.Prefix // IPv6: the lease's network address /128, the whole IPv6Network
	mtu6            int          // on the IPv6 route: IPv6 inner packets may have less room
}

// configureDevice gives the TUN flanneld's layout: the lease's network
// address as /32, the overlay MTU, up, and one route for the whole
// network through it, and for IPv6 (flanneld's udp backend has none) the
// same layout in the other family, as flanneld's vxlan gives its
// flannel-v6 device: the IPv6 lease's network address as /128 and one
// route for the whole IPv6 network, carrying the IPv6 MTU. A device handed
// over is changed only where it differs, so that its route is never
// withdrawn under traffic. It returns the device's interface index.
func configureDevice(l deviceLayout) (int, error) {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return 0, fmt.Errorf("TUN %s: %w", l.name, err)
	}
	return link.Attrs().Index, configureLink(link, l)
}

func configureLink(link netlink.Link, l deviceLayout) error {
	if link.Attrs().MTU != l.mtu {
		if err := netlink.LinkSetMTU(link, l.mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", l.mtu, l.name, err)
		}
	}
	if link.Attrs().TxQLen != tunQueueLen {
		if err := netlink.LinkSetTxQLen(link, tunQueueLen); err != nil {
			return fmt.Errorf("set txqueuelen %d on %s: %w", tunQueueLen, l.name, err)
		}
	}
	if l.addr.IsValid() {
		if err := setOnlyAddr(link, l.addr); err != nil {
			return err
		}
	}
	// Without IPv6 on the TUN the kernel sends no router solicitations
	// into it (they would be counted drops).
	if err := kernel.SetIPv6(l.name, l.network6.IsValid()); err != nil {
		return err
	}
	if l.addr6.IsValid() {
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: kernel.IPNet(l.addr6), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("address %v on %s: %w", l.addr6, l.name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", l.name, err)
		}
	}
	if l.network.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: kernel.IPNet(l.network), Scope: netlink.SCOPE_LINK}
		if !hasRoute(link, route) {
			if err := netlink.RouteReplace(route); err != nil {
				return fmt.Errorf("route %v dev %s: %w", l.network, l.name, err)
			}
		}
	}
	if l.network6.IsValid() {
		// A replace swaps the route in one step: never withdrawn.
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: kernel.IPNet(l.network6), MTU: l.mtu6}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("route %v dev %s: %w", l.network6, l.name, err)
		}
	}
	return nil
}

// deviceTxDropped reads the device's tx_dropped (0 when it is gone).
func deviceTxDropped(name string) uint64 {
	link, err := netlink.LinkByName(name)
	if err != nil || link.Attrs().Statistics == nil {
		return 0
	}
	return link.Attrs().Statistics.TxDropped
}

// setOnlyAddr makes addr the device's one IPv4 address; a kept device may
// still carry an earlier lease's.
func setOnlyAddr(link netlink.Link, addr netip.Prefix) error {
	name := link.Attrs().Name
	have, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", name, err)
	}
	want := kernel.IPNet(addr)
	found := false
	for _, a := range have {
		if a.IPNet.String() == want.String() {
			found = true
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove stale address %v from %s: %w", a.IPNet, name, err)
		}
	}
	if found {
		return nil
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("address %v on %s: %w", addr, name, err)
	}
	return nil
}

// hasRoute reports whether the main table already holds want on link.
func hasRoute(link netlink.Link, want *netlink.Route) bool {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: want.Dst},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if r.Scope == want.Scope && r.Gw == nil && (r.Table == 0 || r.Table == unix.RT_TABLE_MAIN) {
			return true
		}
	}
	return false
}

// keptTUN is the TUN device of that name, if there is one.
func keptTUN(name string) (*netlink.Tuntap, bool) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, false
	}
	t, ok := link.(*netlink.Tuntap)
	return t, ok
}
