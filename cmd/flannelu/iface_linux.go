package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/backend"
)

// lookupExtIface chooses the underlay interface as flanneld does: the
// first --iface (name or IP) that exists, else the first interface whose
// name or IPv4 address matches an --iface-regex, else the interface of the
// default route. --public-ip, when given, is what the lease publishes.
func lookupExtIface(o *options) (*backend.ExternalInterface, error) {
	iface, addr, err := chooseIface(o)
	if err != nil {
		return nil, err
	}
	if iface.MTU == 0 {
		return nil, fmt.Errorf("interface %s: MTU is 0", iface.Name)
	}
	ext := &backend.ExternalInterface{Iface: iface, IfaceAddr: addr, ExtAddr: addr}
	if o.publicIP != "" {
		ext.ExtAddr = netip.MustParseAddr(o.publicIP) // validated with the flags
	}
	return ext, nil
}

func chooseIface(o *options) (*net.Interface, netip.Addr, error) {
	for _, spec := range o.ifaces {
		if iface, addr, err := ifaceBySpec(spec); err == nil {
			return iface, addr, nil
		}
	}
	if len(o.ifaces) > 0 {
		return nil, netip.Addr{}, fmt.Errorf("--iface %v: no such interface with an IPv4 address", []string(o.ifaces))
	}
	if len(o.ifaceRegexes) > 0 {
		return ifaceByRegex(o.ifaceRegexes)
	}
	return defaultRouteIface()
}

func ifaceBySpec(spec string) (*net.Interface, netip.Addr, error) {
	if want, err := netip.ParseAddr(spec); err == nil {
		return ifaceWith(func(_ *net.Interface, a netip.Addr) bool { return a == want })
	}
	iface, err := net.InterfaceByName(spec)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	addr, err := ifaceIPv4(iface)
	return iface, addr, err
}

func ifaceByRegex(patterns []string) (*net.Interface, netip.Addr, error) {
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("--iface-regex %q: %w", p, err)
		}
		iface, addr, err := ifaceWith(func(i *net.Interface, a netip.Addr) bool {
			return re.MatchString(i.Name) || re.MatchString(a.String())
		})
		if err == nil {
			return iface, addr, nil
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("--iface-regex %v: no interface name or IPv4 address matches", patterns)
}

// ifaceWith returns the first interface and IPv4 address that match.
func ifaceWith(match func(*net.Interface, netip.Addr) bool) (*net.Interface, netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, netip.Addr{}, err
	}
	for i := range ifaces {
		addrs, err := ifaces[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, ok := ipv4Of(a); ok && match(&ifaces[i], p) {
				return &ifaces[i], p, nil
			}
		}
	}
	return nil, netip.Addr{}, errors.New("no matching interface")
}

func ifaceIPv4(iface *net.Interface) (netip.Addr, error) {
	addrs, err := iface.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, ok := ipv4Of(a); ok && !p.IsLinkLocalUnicast() {
			return p, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", iface.Name)
}

func ipv4Of(a net.Addr) (netip.Addr, bool) {
	ipn, ok := a.(*net.IPNet)
	if !ok {
		return netip.Addr{}, false
	}
	p, ok := netip.AddrFromSlice(ipn.IP)
	p = p.Unmap()
	return p, ok && p.Is4()
}

func defaultRouteIface() (*net.Interface, netip.Addr, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex > 0 {
			iface, err := net.InterfaceByIndex(r.LinkIndex)
			if err != nil {
				return nil, netip.Addr{}, err
			}
			addr, err := ifaceIPv4(iface)
			return iface, addr, err
		}
	}
	return nil, netip.Addr{}, errors.New("no default route: choose the interface with --iface or --iface-regex")
}
