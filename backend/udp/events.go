package udp

import (
	"context"
	"net/netip"

	"github.com/flannelu/flannelu/routetable"
	"github.com/flannelu/flannelu/subnet"
)

// HandleEvents turns a batch of peer lease changes into one new route
// table snapshot. A lease of another backend type is ignored with a
// warning, as flanneld's backends do: that host listens for vxlan or
// nothing, not for our UDP.
func (b *Backend) HandleEvents(_ context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before := map[netip.Prefix]routetable.Peer{} // touched prefixes' state before the batch
	for _, ev := range events {
		l := ev.Lease
		if _, seen := before[l.Subnet]; !seen {
			before[l.Subnet] = b.peers[l.Subnet]
		}
		switch {
		case ev.Type == subnet.EventRemoved:
			delete(b.peers, l.Subnet)
			b.log.Info("peer removed", "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP)
		case l.Attrs.BackendType != "" && l.Attrs.BackendType != "udp":
			b.log.Warn("ignoring a peer lease of another backend type", "subnet", l.Subnet, "type", l.Attrs.BackendType)
		case !l.Attrs.PublicIP.Is4() || !l.Subnet.Addr().Is4():
			b.log.Warn("ignoring a peer lease without an IPv4 public address", "subnet", l.Subnet)
		default:
			b.peers[l.Subnet] = routetable.Peer{Subnet: l.Subnet, PublicIP: l.Attrs.PublicIP, Port: uint16(b.port)}
			b.log.Info("peer "+ev.Type.String(), "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP)
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
		case !ok && old.PublicIP.IsValid():
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
