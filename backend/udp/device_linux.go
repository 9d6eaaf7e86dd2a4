package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

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

// configureDevice gives the TUN flanneld's layout: the lease's network
// address as /32, the overlay MTU, up, and one route for the whole
// network through it. A device kept from an earlier run (persistent, or
// handed over) is changed only where it differs, so that its route is
// never withdrawn under traffic.
func configureDevice(name string, addr netip.Prefix, mtu int, network netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("TUN %s: %w", name, err)
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
	}
	if link.Attrs().TxQLen != tunQueueLen {
		if err := netlink.LinkSetTxQLen(link, tunQueueLen); err != nil {
			return fmt.Errorf("set txqueuelen %d on %s: %w", tunQueueLen, name, err)
		}
	}
	if err := setOnlyAddr(link, addr); err != nil {
		return err
	}
	// The udp backend carries IPv4 only: without IPv6 on the TUN the kernel
	// sends no router solicitations into it (they would be counted drops).
	// A kernel without IPv6 has no such file, which is fine.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0o644) //nolint:errcheck // best effort
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: kernel.IPNet(network), Scope: netlink.SCOPE_LINK}
	if hasRoute(link, route) {
		return nil
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("route %v dev %s: %w", network, name, err)
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

// keptTUN is the TUN device name an earlier run left (persistent), if any.
func keptTUN(name string) (*netlink.Tuntap, bool) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, false
	}
	t, ok := link.(*netlink.Tuntap)
	return t, ok
}

// deleteDevice removes a TUN device (one kept from an earlier run that
// cannot be attached to as asked).
func deleteDevice(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if link.Type() != "tuntap" {
		return errors.New(name + " is not a TUN device")
	}
	return netlink.LinkDel(link)
}
