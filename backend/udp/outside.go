package udp

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
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
	if from := m.Addr.Addr(); from.Is4() {
		if _, ok := snap.IsPeer(from.As4()); ok {
			return true
		}
	} else if _, ok := snap.IsPeer6(from.As16()); ok {
		return true
	}
	o.dropRun(m, drop.UnknownPeer)
	return false
}

// acceptInner checks the inner packet of a datagram from a known peer
// and returns its length (bytes after the IPv4 total length are cut off),
// or false with the drop counted. flanneld accepts anything from anyone;
// the peer check before this and the subnet and source checks here are
// the anti-spoofing it lacks.
func (o *outside) acceptInner(pkt []byte, m *encap.Message, snap *routetable.Snapshot) (int, bool) {
	if isIPv6(pkt) && o.own6.IsValid() {
		return o.acceptInner6(pkt, m, snap)
	}
	ip, err := packet.ParseIPv4(pkt)
	if err != nil {
		o.count(drop.Outside, drop.Malformed, pkt, m.Addr)
		return 0, false
	}
	if !o.own.Contains(ip.DstAddr()) {
		o.count(drop.Outside, drop.NotOurSubnet, pkt, m.Addr)
		return 0, false
	}
	if !o.sourceOK(ip.Src, m.Addr.Addr(), snap) {
		o.count(drop.Outside, drop.SpoofedSource, pkt, m.Addr)
		return 0, false
	}
	pkt = pkt[:ip.TotalLen]
	if !o.keepTTL && !packet.DecrementTTL(pkt) {
		o.count(drop.Outside, drop.TTLExpired, pkt, m.Addr)
		return 0, false
	}
	o.traceForwarded(drop.Outside, pkt, m.Addr)
	return len(pkt), true
}

// sourceOK reports whether a peer at public address from (either
// family) may send a packet with inner source src: src must lie in a
// subnet leased by that peer (which holds its flannel device's address too, the subnet's
// network address). With ForeignSources, a source outside the whole
// Network is let through as well (a gateway host forwarding external
// traffic into the overlay unmasqueraded); a source inside the Network
// never passes unless it is the sender's. One route-table lookup, no
// allocation.
func (e *env) sourceOK(src [4]byte, from netip.Addr, snap *routetable.Snapshot) bool {
	if p, ok := snap.Lookup(src); ok && p.HasPublic(from) {
		return true
	}
	return e.foreignSources && binary.BigEndian.Uint32(src[:])&e.netMask != e.netBase
}
