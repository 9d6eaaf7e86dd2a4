package udp

import (
	"net/netip"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/routetable"
)

// acceptInner6 is acceptInner for an IPv6 inner packet, with the same
// rules: for our IPv6 subnet, from the sending peer's IPv6 subnet (or,
// with ForeignSources, from outside the IPv6 network), hop limit
// decremented. Bytes after the payload length are cut off.
func (o *outside) acceptInner6(pkt []byte, m *encap.Message, snap *routetable.Snapshot) (int, bool) {
	ip, err := packet.ParseIPv6(pkt)
	if err != nil {
		o.count(drop.Outside, drop.Malformed, pkt, m.Addr)
		return 0, false
	}
	if !o.own6.Contains(ip.DstAddr()) {
		o.count(drop.Outside, drop.NotOurSubnet, pkt, m.Addr)
		return 0, false
	}
	if !o.sourceOK6(ip.Src, m.Addr.Addr(), snap) {
		o.count(drop.Outside, drop.SpoofedSource, pkt, m.Addr)
		return 0, false
	}
	pkt = pkt[:ip.Len()]
	if !packet.DecrementHopLimit(pkt) {
		o.count(drop.Outside, drop.TTLExpired, pkt, m.Addr)
		return 0, false
	}
	o.traceForwarded(drop.Outside, pkt, m.Addr)
	return len(pkt), true
}

// sourceOK6 is sourceOK for an IPv6 inner source.
func (e *env) sourceOK6(src [16]byte, from netip.Addr, snap *routetable.Snapshot) bool {
	if p, ok := snap.Lookup6(src); ok && p.HasPublic(from) {
		return true
	}
	return e.foreignSources && !e.net6.Contains(netip.AddrFrom16(src))
}
