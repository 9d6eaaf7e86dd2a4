package vxlan

import (
	"bytes"
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
)

// HandleEvents applies peer lease changes in order. A lease of another
// backend type or with malformed BackendData is logged and ignored as
// flanneld does (a Changed event turning a known peer into such a lease
// removes that peer: its old entries can no longer be right). A failure
// to program one peer is logged and counted and does not affect others;
// the reconcile loop retries it.
func (b *Backend) HandleEvents(ctx context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		b.handle(ev)
	}
}

func (b *Backend) handle(ev subnet.Event) {
	key := ev.Lease.Subnet.Masked()
	old, known := b.peers[key]
	if ev.Type == subnet.EventRemoved {
		if known {
			delete(b.peers, key)
			b.report(old, b.unprogram(old), "remove")
		}
		return
	}
	p, err := b.peerOf(ev.Lease)
	if err != nil {
		b.peerErrors.Add(1)
		b.log.Warn("ignoring peer lease", "subnet", ev.Lease.Subnet, "type", ev.Lease.Attrs.BackendType, "error", err)
		if known {
			delete(b.peers, key)
			b.report(old, b.unprogram(old), "remove")
		}
		return
	}
	b.peers[key] = p
	if b.dev == nil {
		return // before Init: the reconcile after Start programs it
	}
	err = b.program(p)
	if err == nil && known {
		err = b.dropStale(old, p)
	}
	b.report(p, err, ev.Type.String())
}

func (b *Backend) report(p peer, err error, what string) {
	if err == nil {
		b.log.Debug("peer "+what, "subnet", p.subnet, "public_ip", p.public, "vtep_mac", p.mac.String(), "direct", p.direct)
		return
	}
	b.peerErrors.Add(1)
	b.log.Error("peer "+what+" failed", "subnet", p.subnet, "public_ip", p.public, "error", err)
}

// peerOf turns a lease into desired state, or says why it cannot.
func (b *Backend) peerOf(l subnet.Lease) (peer, error) {
	if l.Attrs.BackendType != BackendType {
		return peer{}, fmt.Errorf("backend type %q, not %q", l.Attrs.BackendType, BackendType)
	}
	if err := kernel.CheckPeer(b.network, l); err != nil {
		return peer{}, err
	}
	data, err := ParseLeaseData(l.Attrs.BackendData)
	if err != nil {
		return peer{}, err
	}
	p := peer{subnet: l.Subnet.Masked(), public: l.Attrs.PublicIP, mac: data.VtepMAC}
	if b.cfg.DirectRouting && b.dev != nil {
		p.direct, err = kernel.OnLink(b.nl, kernel.IP(p.public), b.ext.Iface.Index)
		if err != nil {
			return peer{}, err
		}
	}
	return p, nil
}

func (b *Backend) neigh(p peer) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: b.dev.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: kernel.IP(p.subnet.Addr()), HardwareAddr: p.mac,
	}
}

func (b *Backend) fdb(p peer) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: b.dev.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: kernel.IP(p.public), HardwareAddr: p.mac,
	}
}

func (b *Backend) route(p peer) *netlink.Route {
	if p.direct {
		return &netlink.Route{LinkIndex: b.ext.Iface.Index, Dst: kernel.IPNet(p.subnet), Gw: kernel.IP(p.public)}
	}
	return &netlink.Route{
		LinkIndex: b.dev.Attrs().Index, Dst: kernel.IPNet(p.subnet),
		Gw: kernel.IP(p.subnet.Addr()), Flags: int(netlink.FLAG_ONLINK),
	}
}

// program writes a peer's entries in flannel's order: neighbour, fdb,
// route (the route last, so no packet is routed to a MAC the kernel
// cannot resolve yet). All writes replace, so a repeat is harmless and
// an existing correct entry is never removed first.
func (b *Backend) program(p peer) error {
	if !p.direct {
		if err := b.nl.NeighSet(b.neigh(p)); err != nil {
			return fmt.Errorf("neighbour %v: %w", p.subnet.Addr(), err)
		}
		if err := b.nl.NeighSet(b.fdb(p)); err != nil {
			return fmt.Errorf("fdb %v dst %v: %w", p.mac, p.public, err)
		}
	}
	if err := b.nl.RouteReplace(b.route(p)); err != nil {
		return fmt.Errorf("route %v: %w", p.subnet, err)
	}
	return nil
}

// unprogram deletes a peer's entries: route first, so nothing is sent to
// a half-removed peer. Entries already gone are fine.
func (b *Backend) unprogram(p peer) error {
	if b.dev == nil {
		return nil
	}
	if err := kernel.IgnoreNotExist(b.nl.RouteDel(b.route(p))); err != nil {
		return fmt.Errorf("route %v: %w", p.subnet, err)
	}
	if p.direct {
		return nil
	}
	if err := kernel.IgnoreNotExist(b.nl.NeighDel(b.neigh(p))); err != nil {
		return fmt.Errorf("neighbour %v: %w", p.subnet.Addr(), err)
	}
	if err := kernel.IgnoreNotExist(b.nl.NeighDel(b.fdb(p))); err != nil {
		return fmt.Errorf("fdb %v: %w", p.mac, err)
	}
	return nil
}

// dropStale removes what old had and now does not, after now has been
// programmed: the fdb entry of a replaced MAC, the vxlan entries of a
// peer that became direct, the direct route of one that stopped being.
// The route to the subnet itself was replaced in place, never deleted.
func (b *Backend) dropStale(old, now peer) error {
	if old.direct && !now.direct {
		return kernel.IgnoreNotExist(b.nl.RouteDel(b.route(old)))
	}
	if old.direct {
		return nil
	}
	if now.direct {
		if err := kernel.IgnoreNotExist(b.nl.NeighDel(b.neigh(old))); err != nil {
			return err
		}
	}
	if now.direct || !bytes.Equal(old.mac, now.mac) {
		return kernel.IgnoreNotExist(b.nl.NeighDel(b.fdb(old)))
	}
	return nil
}

// reconcile makes the kernel match b.peers for everything we own. Callers
// hold b.mu.
func (b *Backend) reconcile() error {
	if b.dev == nil || !b.own.IsValid() {
		return nil // not started yet
	}
	dev, err := b.nl.LinkByIndex(b.dev.Attrs().Index)
	if err != nil {
		return fmt.Errorf("vxlan: device %s: %w", b.dev.Attrs().Name, err)
	}
	if dev.Attrs().Flags&net.FlagUp == 0 {
		b.log.Warn("device was down, bringing it up")
		if err := b.nl.LinkSetUp(dev); err != nil {
			return fmt.Errorf("vxlan: set up: %w", err)
		}
	}
	if err := b.ensureAddress(); err != nil {
		return err
	}
	for _, step := range []func() error{b.syncRoutes, b.syncNeighs, b.syncFDB} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// repair deletes or adds one entry for the reconcile loop and logs it.
func (b *Backend) repair(what, action string, entry fmt.Stringer, do func() error) {
	if err := do(); err != nil && !(action == "delete" && kernel.NotExist(err)) {
		b.peerErrors.Add(1)
		b.log.Error("reconcile: "+action+" "+what+" failed", "entry", entry.String(), "error", err)
		return
	}
	b.log.Info("reconcile: "+action+" "+what, "entry", entry.String())
}
