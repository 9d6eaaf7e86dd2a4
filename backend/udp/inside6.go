package udp

import (
	"net/netip"

	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/routetable"
)

// isIPv6 reports whether pkt claims to be IPv6 (version nibble 6).
func isIPv6(pkt []byte) bool { return len(pkt) > 0 && pkt[0]>>4 == 6 }

// route6 is route for an IPv6 packet: its peer by the IPv6 route table,
// or false when it is dropped (counted, and answered with an ICMPv6 error
// the pod receives). Extension headers are passed through.
func (in *inside) route6(pkt []byte, wire int, snap *routetable.Snapshot) (*routetable.Peer, bool) {
	ip, err := packet.ParseIPv6(pkt)
	if err != nil {
		in.count(drop.Inside, drop.Malformed, pkt, netip.AddrPort{})
		return nil, false
	}
	peer, ok := snap.Lookup6(ip.Dst)
	if !ok {
		// As for IPv4, the destination itself answers: an overlay
		// address routed back through the TUN, never a local one.
		in.answer6(replyNetUnreachable, ip, pkt, ip.Dst)
		in.count(drop.Inside, drop.NoRoute, pkt, netip.AddrPort{})
		return nil, false
	}
	far := peer.Subnet6.Addr().As16() // the far end of the tunnel, as for IPv4
	if wire > in.mtu6 {
		// IPv6 routers never fragment: the sender always hears.
		in.answer6(replyFragNeeded, ip, pkt, far)
		in.count(drop.Inside, drop.TooBig, pkt, netip.AddrPort{})
		return nil, false
	}
	if !packet.DecrementHopLimit(pkt) {
		in.answer6(replyTimeExceeded, ip, pkt, far)
		in.count(drop.Inside, drop.TTLExpired, pkt, netip.AddrPort{})
		return nil, false
	}
	return peer, true
}

// answer6 is answer for IPv6: it queues an ICMPv6 error about pkt for the
// pod that sent it, under the same rate limit.
func (in *inside) answer6(kind icmpReply, ip packet.IPv6, pkt []byte, src [16]byte) {
	if !packet.ShouldAnswer6(ip, pkt) {
		return
	}
	buf, ok := in.icmpSlot()
	if !ok {
		return
	}
	var n int
	var err error
	switch kind {
	case replyTimeExceeded:
		n, err = packet.TimeExceeded6(buf, pkt, src)
	case replyFragNeeded:
		n, err = packet.PacketTooBig(buf, pkt, src, uint32(in.mtu6))
	default:
		n, err = packet.DestUnreachable6(buf, pkt, src)
	}
	if err == nil {
		in.icmpWritten(n)
	}
}

// via is the underlay a packet travels over.
type via uint8

const (
	viaIPv4 via = iota
	viaIPv6
	viaNone // the peer has no public address of a family this host sends
)

// underlay chooses the socket for pkt to peer: the inner packet's own
// family where both hosts have it (IPv4 over IPv4 as flanneld, IPv6 over
// IPv6 as flannel's vxlan), else the other one.
func (in *inside) underlay(peer *routetable.Peer, pkt []byte) via {
	can4 := in.under4 && peer.PublicIP.IsValid()
	can6 := in.under6 && peer.PublicIPv6.IsValid()
	switch {
	case can6 && (isIPv6(pkt) || !can4):
		return viaIPv6
	case can4:
		return viaIPv4
	}
	return viaNone
}

// send6 sends what push queued for the IPv6 socket.
func (in *inside) send6() {
	if in.nout6 == 0 {
		return
	}
	in.sendOn(in.conn6, in.msgs6[:in.nout6])
	in.nout6 = 0
}
