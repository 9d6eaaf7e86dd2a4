package vxlan

import (
	"bytes"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
)

// routeMatches reports whether a kernel route is exactly the one want
// describes (same device, gateway and onlink flag).
func routeMatches(r *netlink.Route, want *netlink.Route) bool {
	return r.LinkIndex == want.LinkIndex && r.Gw.Equal(want.Gw) &&
		r.Flags&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK)
}

// syncRoutes: every route of the main table on flannel.<VNI> (and, with
// DirectRouting, every gateway route on the external interface into the
// network) is ours; keep the ones a peer wants, delete the rest, add what
// is missing. Routes the kernel made (proto kernel) are left alone.
func (b *Backend) syncRoutes() error {
	want := make(map[netip.Prefix]*netlink.Route, len(b.peers))
	for k, p := range b.peers {
		want[k] = b.route(p)
	}
	links := []int{b.dev.Attrs().Index}
	if b.cfg.DirectRouting {
		links = append(links, b.ext.Iface.Index)
	}
	for _, link := range links {
		routes, err := kernel.Routes(b.nl, link)
		if err != nil {
			return err
		}
		for i := range routes {
			r := &routes[i]
			dst, ok := kernel.Prefix(r.Dst)
			if !ok || r.Protocol == unix.RTPROT_KERNEL || !b.ownsRoute(link, dst, r) {
				continue
			}
			if w, ok := want[dst]; ok && routeMatches(r, w) {
				delete(want, dst)
				continue
			}
			b.repair("stale route", "delete", r, func() error { return b.nl.RouteDel(r) })
		}
	}
	for _, r := range want {
		b.repair("missing route", "add", r, func() error { return b.nl.RouteReplace(r) })
	}
	return nil
}

func (b *Backend) ownsRoute(link int, dst netip.Prefix, r *netlink.Route) bool {
	if link == b.dev.Attrs().Index {
		return true
	}
	return r.Gw != nil && kernel.Owned(b.network, dst)
}

// syncNeighs keeps one permanent neighbour per vxlan peer on the device
// and deletes other permanent ones. Entries the kernel resolves itself
// (not permanent) are left to the kernel.
func (b *Backend) syncNeighs() error {
	want := make(map[netip.Addr]*netlink.Neigh, len(b.peers))
	for _, p := range b.peers {
		if !p.direct {
			want[p.subnet.Addr()] = b.neigh(p)
		}
	}
	have, err := kernel.Neighs(b.nl, b.dev.Attrs().Index, unix.AF_INET)
	if err != nil {
		return err
	}
	for i := range have {
		n := &have[i]
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		ip, _ := kernel.Addr(n.IP)
		if w, ok := want[ip]; ok && bytes.Equal(w.HardwareAddr, n.HardwareAddr) {
			delete(want, ip)
			continue
		}
		b.repair("stale neighbour", "delete", n, func() error { return b.nl.NeighDel(n) })
	}
	for _, n := range want {
		b.repair("missing neighbour", "add", n, func() error { return b.nl.NeighSet(n) })
	}
	return nil
}

// syncFDB keeps one fdb entry (VtepMAC -> PublicIP) per vxlan peer on the
// device and deletes every other one.
func (b *Backend) syncFDB() error {
	type key struct {
		mac string
		dst netip.Addr
	}
	want := make(map[key]*netlink.Neigh, len(b.peers))
	for _, p := range b.peers {
		if !p.direct {
			want[key{string(p.mac), p.public}] = b.fdb(p)
		}
	}
	have, err := kernel.Neighs(b.nl, b.dev.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	for i := range have {
		n := &have[i]
		dst, _ := kernel.Addr(n.IP)
		k := key{string(n.HardwareAddr), dst}
		if _, ok := want[k]; ok {
			delete(want, k)
			continue
		}
		n.Family, n.Flags = unix.AF_BRIDGE, netlink.NTF_SELF
		b.repair("stale fdb entry", "delete", n, func() error { return b.nl.NeighDel(n) })
	}
	for _, n := range want {
		b.repair("missing fdb entry", "add", n, func() error { return b.nl.NeighSet(n) })
	}
	return nil
}
