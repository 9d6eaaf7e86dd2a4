package udp

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/internal/trace"
	"github.com/flannelu/flannelu/routetable"
)

// batch moves up to k packets (what is ready) from the TUN to the socket.
// It allocates nothing.
func (in *inside) batch(k int) error {
	n, err := in.q.Read(in.bufs[:k], in.sizes, headroom)
	if err != nil {
		return fmt.Errorf("read TUN: %w", err)
	}
	snap := in.routes.Snapshot()
	for i, buf := range in.bufs[:n] {
		in.queue(buf[headroom:headroom+in.sizes[i]], snap)
	}
	in.sendBatch()
	in.flushICMP()
	return nil
}

// queue routes one packet and, if it goes out, queues it (push). A
// dropped packet is counted (and answered with an ICMP error where that
// helps the sender).
func (in *inside) queue(pkt []byte, snap *routetable.Snapshot) {
	peer, ok := in.route(pkt, len(pkt), snap)
	if !ok {
		return
	}
	via := in.underlay(peer, pkt)
	if via == viaNone {
		in.count(drop.Inside, drop.NoRoute, pkt, netip.AddrPort{})
		return
	}
	in.push(nil, pkt, peer, via)
}

// push puts one datagram, head (nil for a whole packet, a segment's
// headers otherwise) then payload, in the queue of the underlay via.
func (in *inside) push(head, payload []byte, peer *routetable.Peer, via via) {
	m := &in.msgs[via][in.nout[via]]
	in.nout[via]++
	addr := peer.AddrPort()
	if via == viaIPv6 {
		addr = peer.AddrPort6()
	}
	*m = encap.Message{Head: head, Buf: payload, N: len(payload), Addr: addr}
	if t := in.tracer; t != nil {
		t.PacketParts(drop.Inside, head, payload, m.Addr, trace.Forwarded)
	}
}

// queued is how many datagrams wait for the sockets.
func (in *inside) queued() int { return in.nout[viaIPv4] + in.nout[viaIPv6] }

// flushICMP writes the ICMP errors the batch produced into the TUN.
func (in *inside) flushICMP() {
	if in.nicmp == 0 {
		return
	}
	offset := headroom
	if in.vnet {
		// A zero virtio-net header (no offload) goes before each packet.
		offset -= packet.VirtioNetHdrLen
		for _, b := range in.icmp[:in.nicmp] {
			clear(b[offset:headroom])
		}
	}
	in.writeTUN(in.q, in.icmp[:in.nicmp], offset, drop.Inside)
	in.nicmp = 0
}

// route decides the fate of pkt, IPv4 or (where the network carries it)
// IPv6, which goes on the wire in packets of at most wire bytes (pkt
// itself, or the segments of a super-packet, which share its IP header):
// its peer, or false when it is dropped (counted once, and answered with
// an ICMP or ICMPv6 error where that helps the sender). It lowers pkt's
// TTL or hop limit.
func (in *inside) route(pkt []byte, wire int, snap *routetable.Snapshot) (*routetable.Peer, bool) {
	h := &in.hdr
	if err := h.parse(pkt, in.fams[ipv6].own.IsValid()); err != nil {
		reason := drop.Malformed
		if err == packet.ErrVersion {
			reason = drop.NotIPv4 // IPv6 where the network carries none
		}
		in.count(drop.Inside, reason, pkt, netip.AddrPort{})
		return nil, false
	}
	peer, ok := h.lookupDst(snap)
	if !ok {
		// The destination itself is the ICMP source: it is inside the
		// network, not local, and routed back through the TUN, so the
		// kernel accepts the error (reverse-path filter, martian checks)
		// and the pod sees it. flanneld uses a local address, and the
		// kernel drops its error as a martian.
		in.answer(replyNetUnreachable, h, pkt, h.dst())
		in.count(drop.Inside, drop.NoRoute, pkt, netip.AddrPort{})
		return nil, false
	}
	if wire > in.fams[h.fam].mtu {
		if h.fam == ipv6 || h.ip4.DF { // IPv6 routers never fragment: the sender always hears
			in.answer(replyFragNeeded, h, pkt, farEnd(h, peer))
		}
		in.count(drop.Inside, drop.TooBig, pkt, peerAddr(h, peer))
		return nil, false
	}
	if !in.keepTTL && !h.decrementTTL(pkt) {
		in.answer(replyTimeExceeded, h, pkt, farEnd(h, peer))
		in.count(drop.Inside, drop.TTLExpired, pkt, peerAddr(h, peer))
		return nil, false
	}
	return peer, true
}

// farEnd is where errors about a packet to a known peer come from: the
// far end of the tunnel, the peer's TUN address of the packet's family,
// for the reason the destination answers for an unknown one.
func farEnd(h *inner, peer *routetable.Peer) netip.Addr {
	if h.fam == ipv6 {
		return peer.Subnet6.Addr()
	}
	return peer.Subnet.Addr()
}

// peerAddr is the peer's public address of the packet's family, for the
// trace line of a drop.
func peerAddr(h *inner, peer *routetable.Peer) netip.AddrPort {
	if h.fam == ipv6 {
		return peer.AddrPort6()
	}
	return peer.AddrPort()
}

// icmpReply is the ICMP error the inside direction sends back to a pod.
type icmpReply uint8

const (
	replyNetUnreachable icmpReply = iota
	replyFragNeeded
	replyTimeExceeded
)

// answer queues an ICMP (ICMPv6 for an IPv6 packet) error from src about
// pkt for the pod that sent it, to be written into the TUN after the
// batch, under the rate limit.
func (in *inside) answer(kind icmpReply, h *inner, pkt []byte, src netip.Addr) {
	if h.fam == ipv6 && !packet.ShouldAnswer6(h.ip6, pkt) || h.fam == ipv4 && !packet.ShouldAnswer(h.ip4, pkt) {
		return
	}
	buf, ok := in.icmpSlot()
	if !ok {
		return
	}
	if n, err := icmpError(kind, h.fam, buf, pkt, src, in.fams[h.fam].mtu); err == nil {
		in.icmpWritten(n)
	}
}

// icmpError writes the error of kind about pkt, from src, into buf.
func icmpError(kind icmpReply, fam int, buf, pkt []byte, src netip.Addr, mtu int) (int, error) {
	if fam == ipv6 {
		switch kind {
		case replyTimeExceeded:
			return packet.TimeExceeded6(buf, pkt, src.As16())
		case replyFragNeeded:
			return packet.PacketTooBig(buf, pkt, src.As16(), uint32(mtu))
		}
		return packet.DestUnreachable6(buf, pkt, src.As16())
	}
	switch kind {
	case replyTimeExceeded:
		return packet.TimeExceeded(buf, pkt, src.As4())
	case replyFragNeeded:
		return packet.DestUnreachable(buf, pkt, src.As4(), packet.CodeFragNeeded, uint16(mtu))
	}
	return packet.DestUnreachable(buf, pkt, src.As4(), packet.CodeNetUnreachable, 0)
}

// icmpSlot returns the buffer (past its headroom) for the batch's next
// ICMP error, or false when the batch's buffers are used up or the rate
// limit refuses.
func (in *inside) icmpSlot() ([]byte, bool) {
	if in.nicmp == len(in.icmp) || !in.limit.allow(time.Now()) {
		return nil, false
	}
	buf := in.icmp[in.nicmp]
	return buf[headroom:cap(buf)], true
}

// icmpWritten queues the n-byte error written into icmpSlot's buffer.
func (in *inside) icmpWritten(n int) {
	in.icmp[in.nicmp] = in.icmp[in.nicmp][:headroom+n]
	in.nicmp++
}

// via is the underlay a packet travels over: an index of the inside
// half's sockets and queues.
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

// sendBatch sends what push queued, on the IPv4 socket, then on the IPv6
// one: a lone datagram with the plainest call (sendLone).
func (in *inside) sendBatch() {
	if in.queued() == 1 {
		v := viaIPv4
		if in.nout[viaIPv4] == 0 {
			v = viaIPv6
		}
		if in.sendLone(v) {
			in.nout[v] = 0
			return
		}
	}
	for v := range in.nout {
		if in.nout[v] > 0 {
			in.sendOn(in.conns[v], in.msgs[v][:in.nout[v]])
			in.nout[v] = 0
		}
	}
}

// sendOn sends msgs on conn, counting what the socket refused. A datagram
// the kernel refuses (no route to the peer, EMSGSIZE) is dropped and
// counted and the rest of the batch still goes.
func (in *inside) sendOn(conn *encap.Conn, msgs []encap.Message) {
	var pkts, bytes uint64
	defer func() { in.drops.AddForwarded(drop.Inside, pkts, bytes) }()
	for len(msgs) > 0 {
		n, err := conn.WriteBatch(msgs)
		for i := range msgs[:n] {
			pkts++
			bytes += uint64(msgs[i].Len())
		}
		if err != nil {
			if isClosed(err) {
				return // Run is stopping the worker
			}
			in.drops.Add(drop.Inside, drop.WriteError, 1)
			n++ // msgs[n] was refused
		}
		msgs = msgs[min(n, len(msgs)):]
	}
}
