package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/subnet"
)

// lookupExtIface chooses the underlay interface as flanneld v0.28 does,
// for the families the network config enables. With none of --iface,
// --iface-regex and --iface-can-reach: the interface that holds
// --public-ip (--public-ipv6 for an IPv6-only network; in Kubernetes mode
// the node-public-ip annotation has replaced them by now), else the
// interface of the default route (the IPv4 one; the IPv6 one for an
// IPv6-only network). With them, in this order until one fits: each
// --iface (a name, or an IPv4 or IPv6 address of the interface) that
// exists and has a usable address of every enabled family, then each
// --iface-regex matching an interface's name or address, then the
// interface of the route to --iface-can-reach (with the route's source
// address); each that does not fit is logged. An address an option named
// is used for its family; the other family's is the interface's first
// usable one. --public-ip and --public-ipv6, when given, are what the
// lease publishes.
//
// Where flanneld differs: its dual-stack lookup by IPv4 address never
// fills in the IPv6 address (the IPv6 device gets none) and its lookup by
// IPv6 address fails without --public-ipv6; it also settles for a
// link-local address when there is no other, and exits when --public-ip
// is on no interface of this host (an address behind NAT), where
// flannelu takes the default route's interface. flannelu takes both
// families from the chosen interface and refuses an address other hosts
// cannot reach (loopback, link-local, multicast, unspecified) with an
// error naming it.
func lookupExtIface(o *Options, fams families, log *slog.Logger) (*backend.ExternalInterface, error) {
	c, err := chooseIface(o, fams, log)
	if err != nil {
		return nil, err
	}
	if c.iface.MTU == 0 {
		return nil, fmt.Errorf("interface %s: MTU is 0", c.iface.Name)
	}
	ext := &backend.ExternalInterface{Iface: c.iface}
	if fams.v4 {
		ext.IfaceAddr, ext.ExtAddr = c.v4, c.v4
		if o.publicIP != "" {
			ext.ExtAddr = netip.MustParseAddr(o.publicIP) // validated with the flags
		}
	}
	if fams.v6 {
		ext.IfaceV6Addr, ext.ExtV6Addr = c.v6, c.v6
		if o.publicIPv6 != "" {
			ext.ExtV6Addr = netip.MustParseAddr(o.publicIPv6) // validated with the flags
		}
	}
	return ext, nil
}

// choice is an interface and the addresses chosen on it.
type choice struct {
	iface  *net.Interface
	v4, v6 netip.Addr
}

// candidate is one way of finding the interface, named for the logs.
type candidate struct {
	name string // "--iface eth0"
	find func() (choice, error)
}

func chooseIface(o *Options, fams families, log *slog.Logger) (choice, error) {
	var cands []candidate
	for _, spec := range o.ifaces {
		cands = append(cands, candidate{"--iface " + spec, func() (choice, error) { return ifaceBySpec(spec, fams) }})
	}
	for _, p := range o.ifaceRegexes {
		cands = append(cands, candidate{"--iface-regex " + p, func() (choice, error) { return ifaceByRegex(p, fams) }})
	}
	if o.ifaceCanReach != "" {
		cands = append(cands, candidate{"--iface-can-reach " + o.ifaceCanReach, func() (choice, error) { return ifaceCanReach(o.ifaceCanReach, fams) }})
	}
	if len(cands) == 0 {
		return publicOrDefaultIface(o, fams, log)
	}
	var errs []error
	for _, cand := range cands {
		c, err := cand.find()
		if err == nil {
			return c, nil
		}
		err = fmt.Errorf("%s: %w", cand.name, err)
		log.Info("interface option does not fit, trying the next", "error", err)
		errs = append(errs, err)
	}
	return choice{}, fmt.Errorf("no interface fits --iface, --iface-regex or --iface-can-reach: %w", errors.Join(errs...))
}

// publicOrDefaultIface is the interface that holds the public address of
// the first enabled family that has one, else the default route's.
func publicOrDefaultIface(o *Options, fams families, log *slog.Logger) (choice, error) {
	for _, pub := range []struct {
		flag, addr string
		enabled    bool
	}{{"--public-ip", o.publicIP, fams.v4}, {"--public-ipv6", o.publicIPv6, fams.v6}} {
		if pub.addr == "" || !pub.enabled {
			continue
		}
		c, err := ifaceBySpec(pub.addr, fams)
		if err == nil {
			return c, nil
		}
		log.Info("the public address is not usable on an interface of this host (behind NAT?): using the default route's interface",
			pub.flag, pub.addr, "error", err)
		break
	}
	return defaultRouteIface(fams)
}

// errUnusable marks an address other hosts cannot reach.
var errUnusable = errors.New("not usable for the underlay")

func ifaceBySpec(spec string, fams families) (choice, error) {
	if want, err := netip.ParseAddr(spec); err == nil {
		want = want.Unmap()
		if err := subnet.UsableUnicast(want); err != nil {
			return choice{}, fmt.Errorf("%w: %w", errUnusable, err)
		}
		c, err := ifaceWith(func(_ *net.Interface, a netip.Addr) bool { return a == want })
		if err != nil {
			return choice{}, err
		}
		return c, c.complete(fams)
	}
	iface, err := net.InterfaceByName(spec)
	if err != nil {
		return choice{}, err
	}
	c := choice{iface: iface}
	return c, c.complete(fams)
}

func ifaceByRegex(pattern string, fams families) (choice, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return choice{}, err
	}
	c, err := ifaceWith(func(i *net.Interface, a netip.Addr) bool {
		return re.MatchString(i.Name) || (fams.has(a) && re.MatchString(a.String()))
	})
	if err != nil {
		return choice{}, errors.New("no interface name or address matches")
	}
	if re.MatchString(c.iface.Name) {
		c = choice{iface: c.iface} // matched by name: the addresses are the interface's first
	}
	return c, c.complete(fams)
}

// ifaceCanReach is the interface of the route to dst, with the route's
// source address for dst's family ("ip route get <dst>").
func ifaceCanReach(dst string, fams families) (choice, error) {
	a, err := netip.ParseAddr(dst)
	if err != nil {
		return choice{}, errors.New("not an IP address")
	}
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return choice{}, fmt.Errorf("no route: %v", err)
	}
	iface, err := net.InterfaceByIndex(routes[0].LinkIndex)
	if err != nil {
		return choice{}, err
	}
	c := choice{iface: iface}
	if src, ok := netip.AddrFromSlice(routes[0].Src); ok && fams.has(src.Unmap()) && subnet.UsableUnicast(src.Unmap()) == nil {
		c.set(src.Unmap())
	}
	return c, c.complete(fams)
}

// has reports whether a is of an enabled family.
func (f families) has(a netip.Addr) bool { return (a.Is4() && f.v4) || (a.Is6() && f.v6) }

// ifaceWith returns the first interface and address that match, with the
// address recorded for its family.
func ifaceWith(match func(*net.Interface, netip.Addr) bool) (choice, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return choice{}, err
	}
	for i := range ifaces {
		addrs, err := ifaceAddrs(&ifaces[i])
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if match(&ifaces[i], a) {
				c := choice{iface: &ifaces[i]}
				c.set(a)
				return c, nil
			}
		}
	}
	return choice{}, errors.New("no matching interface")
}

func (c *choice) set(a netip.Addr) {
	if a.Is4() {
		c.v4 = a
	} else {
		c.v6 = a
	}
}

// complete fills each enabled family that has no address yet with the
// interface's first usable one, or says why there is none.
func (c *choice) complete(fams families) error {
	addrs, err := ifaceAddrs(c.iface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", c.iface.Name, err)
	}
	for _, f := range []struct {
		need bool
		have *netip.Addr
		is   func(netip.Addr) bool
		name string
	}{
		{fams.v4, &c.v4, netip.Addr.Is4, "IPv4"},
		{fams.v6, &c.v6, netip.Addr.Is6, "IPv6"},
	} {
		if !f.need || f.have.IsValid() {
			continue
		}
		var unusable []string
		for _, a := range addrs {
			if !f.is(a) {
				continue
			}
			if err := subnet.UsableUnicast(a); err != nil {
				unusable = append(unusable, err.Error())
				continue
			}
			*f.have = a
			break
		}
		if !f.have.IsValid() {
			msg := fmt.Sprintf("interface %s has no usable %s address", c.iface.Name, f.name)
			if len(unusable) > 0 {
				msg += " (" + strings.Join(unusable, "; ") + ")"
			}
			return errors.New(msg)
		}
	}
	return nil
}

// ifaceAddrs lists an interface's addresses, IPv4 ones unmapped, in the
// kernel's order.
func ifaceAddrs(iface *net.Interface) ([]netip.Addr, error) {
	raw, err := iface.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range raw {
		if ipn, ok := a.(*net.IPNet); ok {
			if p, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, p.Unmap())
			}
		}
	}
	return out, nil
}

// defaultRouteIface is the interface of the IPv4 default route, or of the
// IPv6 one for an IPv6-only network.
func defaultRouteIface(fams families) (choice, error) {
	family, name := netlink.FAMILY_V4, "IPv4"
	if !fams.v4 {
		family, name = netlink.FAMILY_V6, "IPv6"
	}
	routes, err := netlink.RouteList(nil, family)
	if err != nil {
		return choice{}, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex > 0 {
			iface, err := net.InterfaceByIndex(r.LinkIndex)
			if err != nil {
				return choice{}, err
			}
			c := choice{iface: iface}
			return c, c.complete(fams)
		}
	}
	return choice{}, fmt.Errorf("no %s default route: choose the interface with --iface or --iface-regex", name)
}
