package vxlan

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
)

// peer is the desired kernel state for one remote lease in one family.
type peer struct {
	subnet netip.Prefix
	public netip.Addr
	mac    net.HardwareAddr
	direct bool // DirectRouting and on our link: plain route, no vxlan entries
}

// HandleEvents applies peer lease changes in order, of leases the daemon's
// subnet.Validator accepted (inside the network, overlapping no other, a
// usable public address, data CheckLeaseData takes). A lease of another
// backend type is logged and ignored as flanneld does (a Changed event
// turning a known peer into such a lease removes that peer: its old
// entries can no longer be right). Each family is programmed on its own:
// a dual-stack peer whose IPv6 half is unusable (no PublicIPv6 or
// BackendV6Data) still gets its IPv4 entries, where flanneld would skip
// the whole lease. A failure to program one peer is logged and counted and
// does not affect others; the reconcile loop retries it.
//
// The entries of peers new to it go to the kernel many per system call
// when a batch brings many (kernel.Batcher): a start-up into 5,000 peers.
func (b *Backend) HandleEvents(ctx context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.batch.For(len(events), b.log)
	for _, ev := range events {
		foreign := kernel.Foreign(ev, BackendType, b.log, b.peerErrors)
		for _, v := range b.vteps {
			v.handle(ev, foreign, batch)
		}
	}
	b.batch.Flush(batch, b.log)
}

// handle applies one event to this family; foreign says the lease is of
// another backend type and only its removal is left to do. A new peer's
// entries are queued in batch when there is one.
func (v *vtep) handle(ev subnet.Event, foreign bool, batch *kernel.Batch) {
	key := v.fam.Subnet(ev.Lease).Masked()
	old, known := v.peers[key]
	if ev.Type == subnet.EventRemoved || foreign {
		if known {
			delete(v.peers, key)
			v.report(old, v.unprogram(old), "remove")
		}
		return
	}
	p, err := v.peerOf(ev.Lease)
	if err != nil {
		v.b.peerErrors.Add(1)
		v.log.Warn("ignoring peer lease", "subnet", v.fam.Subnet(ev.Lease), "family", v.fam.String(), "error", err)
		if known {
			delete(v.peers, key)
			v.report(old, v.unprogram(old), "remove")
		}
		return
	}
	v.peers[key] = p
	if v.dev == nil {
		return // before Init: the reconcile after Start programs it
	}
	if batch != nil && !known {
		v.queue(batch, p)
		return
	}
	err = v.program(p)
	if err == nil && known {
		err = v.dropStale(old, p)
	}
	v.report(p, err, ev.Type.String())
}

func (v *vtep) report(p peer, err error, what string) {
	if err == nil {
		v.log.Debug("peer "+what, "subnet", p.subnet, "public_ip", p.public, "vtep_mac", p.mac.String(), "direct", p.direct)
		return
	}
	v.b.peerErrors.Add(1)
	v.log.Error("peer "+what+" failed", "subnet", p.subnet, "public_ip", p.public, "error", err)
}

// CheckLeaseData is this backend's rule for a peer's data, which the
// daemon's subnet.Validator applies to every write (an invalid one keeps
// the peer's last valid value): a vxlan lease's BackendData must hold a
// VNI in range and a unicast VtepMAC (not missing, zero or multicast) for
// every family this backend carries; on a dual-stack network a missing
// BackendV6Data is allowed (the peer gets its IPv4 entries only), an
// invalid one is not. Leases of another backend type are left to
// HandleEvents, which ignores them.
func (b *Backend) CheckLeaseData(l subnet.Lease) error {
	if l.Attrs.BackendType != BackendType {
		return nil
	}
	for _, v := range b.vteps {
		data := v.fam.BackendData(l)
		if v.fam.Is6() && len(data) == 0 && len(b.vteps) > 1 {
			continue
		}
		if _, err := ParseLeaseData(data); err != nil {
			if v.fam.Is6() {
				return fmt.Errorf("BackendV6Data: %w", err)
			}
			return err
		}
	}
	return nil
}

// peerOf turns this family's half of a lease into desired state, or says
// why it cannot.
func (v *vtep) peerOf(l subnet.Lease) (peer, error) {
	if err := backend.CheckPeer(v.network, l); err != nil {
		return peer{}, err
	}
	data, err := ParseLeaseData(v.fam.BackendData(l))
	if err != nil {
		if v.fam.Is6() {
			return peer{}, fmt.Errorf("BackendV6Data: %w", err)
		}
		return peer{}, err
	}
	p := peer{subnet: v.fam.Subnet(l).Masked(), public: v.fam.PublicIP(l), mac: data.VtepMAC}
	if v.b.cfg.DirectRouting && v.dev != nil {
		p.direct, err = kernel.OnLink(v.b.nl, kernel.IP(p.public), v.b.ext.Iface.Index)
		if err != nil {
			return peer{}, err
		}
	}
	return p, nil
}

func (v *vtep) neigh(p peer) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: v.dev.Attrs().Index, Family: v.fam.Netlink(), State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: kernel.IP(p.subnet.Addr()), HardwareAddr: p.mac,
	}
}

func (v *vtep) fdb(p peer) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: v.dev.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: kernel.IP(p.public), HardwareAddr: p.mac,
	}
}

func (v *vtep) route(p peer) *netlink.Route {
	if p.direct {
		return &netlink.Route{LinkIndex: v.b.ext.Iface.Index, Dst: kernel.IPNet(p.subnet), Gw: kernel.IP(p.public)}
	}
	return &netlink.Route{
		LinkIndex: v.dev.Attrs().Index, Dst: kernel.IPNet(p.subnet),
		Gw: kernel.IP(p.subnet.Addr()), Flags: int(netlink.FLAG_ONLINK),
	}
}

// program writes a peer's entries in flannel's order: neighbour, fdb,
// route (the route last, so no packet is routed to a MAC the kernel
// cannot resolve yet). All writes replace, so a repeat is harmless and
// an existing correct entry is never removed first.
func (v *vtep) program(p peer) error {
	nl := v.b.nl
	if !p.direct {
		if err := nl.NeighSet(v.neigh(p)); err != nil {
			return fmt.Errorf("neighbour %v: %w", p.subnet.Addr(), err)
		}
		if err := nl.NeighSet(v.fdb(p)); err != nil {
			return fmt.Errorf("fdb %v dst %v: %w", p.mac, p.public, err)
		}
	}
	if err := nl.RouteReplace(v.route(p)); err != nil {
		return fmt.Errorf("route %v: %w", p.subnet, err)
	}
	return nil
}

// queue is program through a batch: the same entries in the same order,
// each failure reported as program's would be.
func (v *vtep) queue(batch *kernel.Batch, p peer) {
	failed := false
	report := func(what string, arg any) func(error) {
		return func(err error) {
			if err != nil && !failed {
				failed = true
				v.report(p, fmt.Errorf("%s %v: %w", what, arg, err), "added")
			}
		}
	}
	if !p.direct {
		batch.NeighSet(v.neigh(p), report("neighbour", p.subnet.Addr())) //nolint:errcheck // reported through the callbacks
		batch.NeighSet(v.fdb(p), report("fdb", p.mac))                   //nolint:errcheck // reported through the callbacks
	}
	batch.RouteReplace(v.route(p), report("route", p.subnet)) //nolint:errcheck // reported through the callbacks
}

// unprogram deletes a peer's entries: route first, so nothing is sent to
// a half-removed peer. Entries already gone are fine.
func (v *vtep) unprogram(p peer) error {
	if v.dev == nil {
		return nil
	}
	nl := v.b.nl
	if err := kernel.IgnoreNotExist(nl.RouteDel(v.route(p))); err != nil {
		return fmt.Errorf("route %v: %w", p.subnet, err)
	}
	if p.direct {
		return nil
	}
	if err := kernel.IgnoreNotExist(nl.NeighDel(v.neigh(p))); err != nil {
		return fmt.Errorf("neighbour %v: %w", p.subnet.Addr(), err)
	}
	if err := kernel.IgnoreNotExist(nl.NeighDel(v.fdb(p))); err != nil {
		return fmt.Errorf("fdb %v: %w", p.mac, err)
	}
	return nil
}

// dropStale removes what old had and now does not, after now has been
// programmed: the fdb entry of a replaced MAC or public address, the
// vxlan entries of a peer that became direct, the direct route of one
// that stopped being. The route to the subnet itself was replaced in
// place, never deleted.
func (v *vtep) dropStale(old, now peer) error {
	nl := v.b.nl
	if old.direct && !now.direct {
		return kernel.IgnoreNotExist(nl.RouteDel(v.route(old)))
	}
	if old.direct {
		return nil
	}
	if now.direct {
		if err := kernel.IgnoreNotExist(nl.NeighDel(v.neigh(old))); err != nil {
			return err
		}
	}
	if now.direct || !bytes.Equal(old.mac, now.mac) || old.public != now.public {
		return kernel.IgnoreNotExist(nl.NeighDel(v.fdb(old)))
	}
	return nil
}
