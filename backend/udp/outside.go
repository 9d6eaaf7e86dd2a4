package udp

import (
	"fmt"

	"github.com/flannelu/flannelu/drop"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/packet"
	"github.com/flannelu/flannelu/routetable"
)

// runOutside is the UDP to TUN direction: receive a batch of datagrams with
// one recvmmsg, keep only those a known peer sent that carry a well-formed
// IPv4 packet for our own subnet, decrement the TTL as flanneld does, and
// write them into the TUN. It returns when the socket or TUN is closed.
func (w *worker) runOutside() error {
	for {
		if err := w.outsideBatch(); err != nil {
			if isClosed(err) {
				return nil
			}
			return err
		}
	}
}

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
		if size, ok := w.acceptOne(m.Buf[:m.N], m, snap); ok {
			o.tun[keep] = o.bufs[i][:headroom+size]
			keep++
			bytes += uint64(size)
		}
	}
	if keep > 0 {
		written := w.writeTUN(o.tun[:keep], drop.Outside)
		w.b.drops.AddForwarded(drop.Outside, uint64(written), bytes)
	}
	return nil
}

// acceptOne checks one datagram and returns the inner packet's length
// (trailing bytes after the IPv4 total length are cut off), or false with
// the drop counted. flanneld accepts anything from anyone; this is the
// anti-spoofing it lacks.
func (w *worker) acceptOne(pkt []byte, m *encap.Message, snap *routetable.Snapshot) (int, bool) {
	_, ok := snap.IsPeer(m.Addr.Addr().As4())
	if !ok {
		w.count(drop.Outside, drop.UnknownPeer, pkt, m.Addr)
		return 0, false
	}
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
