package leftover

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
)

// Remove deletes the devices of flannel's backends other than the
// configured one (their routes, neighbours and fdb entries go with them)
// and, unless the configured backend routes via the external interface
// itself, the gateway routes host-gw left there: flannel's protocol
// (boot), a gateway, and a destination strictly inside an overlay
// network. Each removal is logged. It never fails the start: an error is
// returned for the caller to log.
func Remove(o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	nl := o.Netlink
	if nl == nil {
		var err error
		if nl, err = netlink.NewHandle(); err != nil {
			return fmt.Errorf("leftover: netlink: %w", err)
		}
		defer nl.Close()
	}
	errs := []error{removeDevices(nl, o)}
	if o.ExtIface > 0 && !o.keepsGatewayRoutes() {
		for _, network := range o.Networks {
			errs = append(errs, removeGatewayRoutes(nl, o, network))
		}
	}
	return errors.Join(errs...)
}

func removeDevices(nl *netlink.Handle, o Options) error {
	links, err := kernel.Dump("links", nl.LinkList)
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		typ := o.backendOf(name)
		if typ == "" || !deviceKinds[l.Type()] || o.keepsDevice(name) {
			continue
		}
		if why := inUse(nl, l, o); why != "" {
			o.Logger.Debug("kept the device of another backend: "+why, "device", name, "backend", typ, "configured", o.Backend)
			continue
		}
		if err := nl.LinkDel(l); err != nil && !kernel.NotExist(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
			continue
		}
		o.Logger.Info("removed the device of a backend no longer configured", "device", name, "kind", l.Type(),
			"backend", typ, "configured", o.Backend)
	}
	return errors.Join(errs...)
}

// inUse says why a device of another backend is not this network's
// leftover ("" when it is): a TUN with a queue attached (its carrier is up
// only then) is held by a running daemon; a device with an address outside
// this host's subnets belongs to another network's.
func inUse(nl *netlink.Handle, l netlink.Link, o Options) string {
	if l.Type() == "tuntap" && l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
		return "a process holds it open"
	}
	addrs, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return "" // gone meanwhile, or unreadable: removed as before
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		if !o.ownedAddr(ip.Unmap()) {
			return "addressed outside this host's subnets (another network's)"
		}
	}
	return ""
}

func removeGatewayRoutes(nl *netlink.Handle, o Options, network netip.Prefix) error {
	routes, err := kernel.Routes(nl, backend.FamilyOf(network.Addr()), o.ExtIface)
	if err != nil {
		return err
	}
	var errs []error
	removed := 0
	for i := range routes {
		r := &routes[i]
		dst, ok := kernel.Prefix(r.Dst)
		if !ok || r.Gw == nil || !kernel.Flannels(r) || !kernel.Owned(network, dst) {
			continue
		}
		if err := kernel.IgnoreNotExist(nl.RouteDel(r)); err != nil {
			errs = append(errs, fmt.Errorf("delete route %v: %w", dst, err))
			continue
		}
		removed++
	}
	if removed > 0 {
		o.Logger.Info("removed the peer routes via the external interface a host-gw run left", "routes", removed,
			"network", network, "configured", o.Backend)
	}
	return errors.Join(errs...)
}
