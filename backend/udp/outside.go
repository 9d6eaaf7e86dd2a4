package udp

import (
	"fmt"

	"github.com/flannelu/flannelu/drop"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/packet"
	"github.com/flannelu/flannelu/routetable"
)

// outsideBatch moves one batch from the socket to the TUN. It allocates
// nothing.
func (w *worker) outsideBatch() error {
	o := &w.out
	n, err := w.conn.ReadBatch(o.msgs)
	if err != nil {
		return fmt.Errorf("read UDP: %w", err)
	}
	snap := w.b.routes.Snapshot()
	keep := 0
	var bytes uint64
	for i := range o.msgs[:n] {
		m := &o.msgs[i]
		if !w.fromPeer(m, snap) {
			continue
		}
		if size, ok := w.acceptInner(m.Buf[:m.N], m); ok {
			o.tun[keep] = o.bufs[i][:headroom+size]
			keep++
			bytes += uint64(size)
		}
	}
	if keep > 0 {
		written := w.writeTUN(o.tun[:keep], headroom, drop.Outside)
		w.b.drops.AddForwarded(drop.Outside, uint64(written), bytes)
	}
	return nil
}

// fromPeer reports whether a message came from a known peer's public
// address; when not, every datagram in it is counted as unknown_peer.
func (w *worker) fromPeer(m *encap.Message, snap *routetable.Snapshot) bool {
	if _, ok := snap.IsPeer(m.Addr.Addr().As4()); ok {
		return true
	}
	w.dropRun(m, drop.UnknownPeer)
	return false
}

// acceptInner checks the inner packet of a datagram from a known peer
// and returns its length (bytes after the IPv4 total length are cut off),
// or false with the drop counted. flanneld accepts anything from anyone;
// the peer check before this and the subnet check here are the
// anti-spoofing it lacks.
func (w *worker) acceptInner(pkt []byte, m *encap.Message) (int, bool) {
	ip, err := packet.ParseIPv4(pkt)
	if err != nil {
		w.count(drop.Outside, drop.Malformed, pkt, m.Addr)
		return 0, false
	}
	if !w.b.own.Contains(ip.DstAddr()) {
		w.count(drop.Outside, drop.NotOurSubnet, pkt, m.Addr)
		return 0, false
	}
	pkt = pkt[:ip.TotalLen]
	if !packet.DecrementTTL(pkt) {
		w.count(drop.Outside, drop.TTLExpired, pkt, m.Addr)
		return 0, false
	}
	w.traceForwarded(drop.Outside, pkt, m.Addr)
	return len(pkt), true
}
