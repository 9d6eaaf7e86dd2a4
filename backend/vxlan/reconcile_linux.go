package vxlan

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
)

// reconcile makes the kernel match v.peers for everything this family
// owns. Callers hold the Backend's mutex.
func (v *vtep) reconcile() error {
	if v.dev == nil || !v.own.IsValid() {
		return nil // not started yet
	}
	if err := v.ensureUp(); err != nil {
		return err
	}
	if err := v.ensureAddress(); err != nil {
		return err
	}
	for _, step := range []func() error{v.syncRoutes, v.syncNeighs, v.syncFDB} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// repair deletes or adds one entry for the reconcile loop and logs it.
func (v *vtep) repair(what, action string, entry fmt.Stringer, do func() error) {
	if err := do(); err != nil && !(action == "delete" && kernel.NotExist(err)) {
		v.b.peerErrors.Add(1)
		v.log.Error("reconcile: "+action+" "+what+" failed", "entry", entry.String(), "error", err)
		return
	}
	v.log.Info("reconcile: "+action+" "+what, "entry", entry.String())
}

// routeMatches reports whether a kernel route is exactly the one want
// describes (same device, gateway and onlink flag).
func routeMatches(r *netlink.Route, want *netlink.Route) bool {
	return r.LinkIndex == want.LinkIndex && r.Gw.Equal(want.Gw) &&
		r.Flags&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK)
}

// syncRoutes: every route of the family in the main table on the device
// (and, with DirectRouting, every gateway route on the external interface
// into the family's network) is ours; keep the ones a peer wants, delete
// the rest, add what is missing. Routes of another protocol than flannel's
// (the kernel's, proto static, a routing daemon's) are left alone.
func (v *vtep) syncRoutes() error {
	want := make(map[netip.Prefix]*netlink.Route, len(v.peers))
	for k, p := range v.peers {
		want[k] = v.route(p)
	}
	links := []int{v.dev.Attrs().Index}
	if v.b.cfg.DirectRouting {
		links = append(links, v.b.ext.Iface.Index)
	}
	for _, link := range links {
		routes, err := kernel.Routes(v.b.nl, v.fam, link)
		if err != nil {
			return err
		}
		for i := range routes {
			r := &routes[i]
			dst, ok := kernel.Prefix(r.Dst)
			if !ok || !kernel.Flannels(r) || !v.ownsRoute(link, dst, r) {
				continue
			}
			if w, ok := want[dst]; ok && routeMatches(r, w) {
				delete(want, dst)
				continue
			}
			v.repair("stale route", "delete", r, func() error { return v.b.nl.RouteDel(r) })
		}
	}
	for _, r := range want {
		v.repair("missing route", "add", r, func() error { return v.b.nl.RouteReplace(r) })
	}
	return nil
}

func (v *vtep) ownsRoute(link int, dst netip.Prefix, r *netlink.Route) bool {
	if link == v.dev.Attrs().Index {
		return true
	}
	return r.Gw != nil && kernel.Owned(v.network, dst)
}

// syncNeighs keeps one permanent neighbour per vxlan peer on the device
// and deletes other permanent ones. Entries the kernel resolves itself
// (not permanent) are left to the kernel.
func (v *vtep) syncNeighs() error {
	want := make(map[netip.Addr]*netlink.Neigh, len(v.peers))
	for _, p := range v.peers {
		if !p.direct {
			want[p.subnet.Addr()] = v.neigh(p)
		}
	}
	have, err := kernel.Neighs(v.b.nl, v.dev.Attrs().Index, v.fam.Netlink())
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
		v.repair("stale neighbour", "delete", n, func() error { return v.b.nl.NeighDel(n) })
	}
	for _, n := range want {
		v.repair("missing neighbour", "add", n, func() error { return v.b.nl.NeighSet(n) })
	}
	return nil
}

// syncFDB keeps one fdb entry (VtepMAC -> PublicIP) per vxlan peer on the
// device and deletes every other one.
func (v *vtep) syncFDB() error {
	type key struct {
		mac string
		dst netip.Addr
	}
	want := make(map[key]*netlink.Neigh, len(v.peers))
	for _, p := range v.peers {
		if !p.direct {
			want[key{string(p.mac), p.public}] = v.fdb(p)
		}
	}
	have, err := kernel.Neighs(v.b.nl, v.dev.Attrs().Index, unix.AF_BRIDGE)
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
		v.repair("stale fdb entry", "delete", n, func() error { return v.b.nl.NeighDel(n) })
	}
	for _, n := range want {
		v.repair("missing fdb entry", "add", n, func() error { return v.b.nl.NeighSet(n) })
	}
	return nil
}
