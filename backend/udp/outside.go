package udp

import (
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/routetable"
)

// batch moves up to k messages (what is ready) from the socket to the
// TUN. It allocates nothing.
func (o *outside) batch(k int) error {
	n, err := o.conn.ReadBatch(o.msgs[:k])
	if err != nil {
		return fmt.Errorf("read UDP: %w", err)
	}
	snap := o.routes.Snapshot()
	keep := 0
	var bytes uint64
	for i := range o.msgs[:n] {
		m := &o.msgs[i]
		if !o.fromPeer(m, snap) {
			continue
		}
		// The packet is at m.Off (after an IPIP outer header): the TUN
		// write takes it at headroom, so its slice starts m.Off later.
		if size, ok := o.acceptInner(m.Buf[m.Off:m.N], m, snap); ok {
			o.tun[keep] = o.bufs[i][m.Off : m.Off+headroom+size]
			keep++
			bytes += uint64(size)
		}
	}
	if keep > 0 {
		written := o.writeTUN(o.q, o.tun[:keep], headroom, drop.Outside)
		o.drops.AddForwarded(drop.Outside, uint64(written), bytes)
	}
	return nil
}

// fromPeer reports whether a message came from a known peer's public
// address; when not, every datagram in it is counted as unknown_peer.
func (o *outside) fromPeer(m *encap.Message, snap *routetable.Snapshot) bool {
	if _, ok := snap.IsPeerAddr(m.Addr.Addr()); ok {
		return true
	}
	o.dropRun(m, drop.UnknownPeer)
	return false
}

// acceptInner checks the inner packet (IPv4, or IPv6 where the network
// carries it) of a datagram from a known peer and returns its length
// (bytes after the length its header declares are cut off), or false with
// the drop counted. flanneld accepts anything from anyone; the peer check
// before this and the subnet and source checks here are the anti-spoofing
// it lacks.
func (o *outside) acceptInner(pkt []byte, m *encap.Message, snap *routetable.Snapshot) (int, bool) {
	h := &o.hdr
	if err := h.parse(pkt, o.fams[ipv6].own.IsValid()); err != nil {
		o.count(drop.Outside, drop.Malformed, pkt, m.Addr)
		return 0, false
	}
	if !o.fams[h.fam].own.Contains(h.dst()) {
		o.count(drop.Outside, drop.NotOurSubnet, pkt, m.Addr)
		return 0, false
	}
	if !o.sourceOK(h, m.Addr.Addr(), snap) {
		o.count(drop.Outside, drop.SpoofedSource, pkt, m.Addr)
		return 0, false
	}
	pkt = pkt[:h.len()]
	if !o.keepTTL && !h.decrementTTL(pkt) {
		o.count(drop.Outside, drop.TTLExpired, pkt, m.Addr)
		return 0, false
	}
	o.traceForwarded(drop.Outside, pkt, m.Addr)
	return len(pkt), true
}

// sourceOK reports whether a peer at public address from (either
// family) may send a packet with h's inner source: it must lie in a
// subnet leased by that peer (which holds its flannel device's address
// too, the subnet's network address). With ForeignSources, a source
// outside the whole network of its family is let through as well (a
// gateway host forwarding external traffic into the overlay
// unmasqueraded); a source inside the network never passes unless it is
// the sender's. One route-table lookup, no allocation.
func (e *env) sourceOK(h *inner, from netip.Addr, snap *routetable.Snapshot) bool {
	if p, ok := h.lookupSrc(snap); ok && p.HasPublic(from) {
		return true
	}
	return e.foreignSources && !e.fams[h.fam].network.Contains(h.src())
}
