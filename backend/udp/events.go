package udp

import (
	"context"
	"net/netip"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/routetable"
	"github.com/flannelu/flannelu/subnet"
)

// HandleEvents turns a batch of peer lease changes into one new route
// table snapshot. A lease of another backend type is ignored with a
// warning, as flanneld's backends do: that host listens for vxlan or
// nothing, not for our UDP (or IPIP).
func (b *Backend) HandleEvents(_ context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before := map[netip.Prefix]routetable.Peer{} // touched prefixes' state before the batch
	for _, ev := range events {
		l := ev.Lease
		p, problem := b.peerOf(l)
		id := p.ID()
		if _, seen := before[id]; !seen {
			before[id] = b.peers[id]
		}
		switch {
		case ev.Type == subnet.EventRemoved:
			delete(b.peers, id)
			b.log.Info("peer removed", "subnet", l.Subnet, "ipv6_subnet", l.IPv6Subnet, "public_ip", l.Attrs.PublicIP)
		case !b.carries(l.Attrs.BackendType):
			b.log.Warn("ignoring a peer lease of another backend type", "subnet", id, "type", l.Attrs.BackendType)
		case problem != "":
			b.log.Warn("ignoring a peer lease "+problem, "subnet", l.Subnet, "ipv6_subnet", l.IPv6Subnet)
		default:
			b.peers[id] = p
			b.log.Info("peer "+ev.Type.String(), "subnet", l.Subnet, "ipv6_subnet", l.IPv6Subnet,
				"public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.PublicIPv6)
		}
	}
	// Only the net effect of the batch reaches the table: an add then a
	// remove of one subnet in the same batch leaves it absent.
	var add []routetable.Peer
	var remove []netip.Prefix
	for prefix, old := range before {
		now, ok := b.peers[prefix]
		switch {
		case ok && now != old:
			add = append(add, now)
		case !ok && (old.PublicIP.IsValid() || old.PublicIPv6.IsValid()):
			remove = append(remove, prefix)
		}
	}
	if len(add) == 0 && len(remove) == 0 {
		return
	}
	if err := b.routes.Update(add, remove); err != nil {
		b.log.Warn("some peers were not added to the route table", "error", err)
	}
}

// carries reports whether a peer lease of backendType speaks this
// backend's wire: flanneld's udp backend writes no type, the ipip one
// "ipip".
func (b *Backend) carries(backendType string) bool {
	if b.opts.Encap == encap.IPIP {
		return backendType == "ipip"
	}
	return backendType == "" || backendType == "udp"
}

// peerOf is the route-table entry of a lease: the subnets of the families
// the network carries (IPv6 only with a PublicIPv6) and the public
// addresses, or why the lease cannot be one. Its ID names it whatever the problem (for removals).
func (b *Backend) peerOf(l subnet.Lease) (routetable.Peer, string) {
	p := routetable.Peer{Port: uint16(b.port)}
	if b.opts.Network.IsValid() && l.Subnet.Addr().Is4() {
		p.Subnet = l.Subnet
	}
	if a := l.Attrs.PublicIP; a.Is4() && !a.IsUnspecified() {
		p.PublicIP = a
	}
	if a := l.Attrs.PublicIPv6; a.Is6() && !a.IsUnspecified() {
		p.PublicIPv6 = a
	}
	// IPv6 pods only behind a lease with a PublicIPv6: flanneld's udp
	// backend publishes none, and its proxy would take an IPv6 packet for
	// IPv4 and mangle it (README). Its IPv6 subnet is then no route here.
	if b.opts.Network6.IsValid() && l.IPv6Subnet.Addr().Is6() && p.PublicIPv6.IsValid() {
		p.Subnet6 = l.IPv6Subnet
	}
	switch {
	case !p.Subnet.IsValid() && !p.Subnet6.IsValid():
		return p, "without a subnet of the network's families"
	case !p.PublicIP.IsValid() && !p.PublicIPv6.IsValid():
		return p, "without a public address"
	}
	return p, ""
}
