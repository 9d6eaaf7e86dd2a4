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
	out := 0
	for i, buf := range in.bufs[:n] {
		out = in.queue(buf[headroom:headroom+in.sizes[i]], snap, out)
	}
	in.sendBatch(in.msgs[:out])
	in.flushICMP()
	return nil
}

// queue routes one packet and, if it goes out, queues it (push); it
// returns the new IPv4 count. A dropped packet is counted (and answered
// with an ICMP error where that helps the sender).
func (in *inside) queue(pkt []byte, snap *routetable.Snapshot, out int) int {
	peer, ok := in.route(pkt, len(pkt), snap)
	if !ok {
		return out
	}
	via := in.underlay(peer, pkt)
	if via == viaNone {
		in.count(drop.Inside, drop.NoRoute, pkt, netip.AddrPort{})
		return out
	}
	return in.push(nil, pkt, peer, via, out)
}

// push puts one datagram, head (nil for a whole packet, a segment's
// headers otherwise) then payload, in the queue of the underlay via: the
// IPv4 one, in.msgs[out], whose new count it returns, or the IPv6 one
// that send6 sends.
func (in *inside) push(head, payload []byte, peer *routetable.Peer, via via, out int) int {
	var m *encap.Message
	if via == viaIPv6 {
		m = &in.msgs6[in.nout6]
		in.nout6++
		*m = encap.Message{Head: head, Buf: payload, N: len(payload), Addr: peer.AddrPort6()}
	} else {
		m = &in.msgs[out]
		out++
		*m = encap.Message{Head: head, Buf: payload, N: len(payload), Addr: peer.AddrPort()}
	}
	if t := in.tracer; t != nil {
		t.PacketParts(drop.Inside, head, payload, m.Addr, trace.Forwarded)
	}
	return out
}

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

// route decides the fate of pkt, which goes on the wire in packets of at
// most wire bytes (pkt itself, or the segments of a super-packet, which
// share its IP header): its peer, or false when it is dropped (counted
// once, and answered with an ICMP error where that helps the sender). It
// lowers pkt's TTL.
func (in *inside) route(pkt []byte, wire int, snap *routetable.Snapshot) (*routetable.Peer, bool) {
	if isIPv6(pkt) && in.own6.IsValid() {
		return in.route6(pkt, wire, snap)
	}
	ip, err := packet.ParseIPv4(pkt)
	if err != nil {
		reason := drop.Malformed
		if err == packet.ErrVersion {
			reason = drop.NotIPv4 // IPv6 where the network carries none
		}
		in.count(drop.Inside, reason, pkt, netip.AddrPort{})
		return nil, false
	}
	peer, ok := snap.Lookup(ip.Dst)
	if !ok {
		// The destination itself is the ICMP source: it is inside the
		// network, not local, and routed back through the TUN, so the
		// kernel accepts the error (reverse-path filter, martian checks)
		// and the pod sees it. flanneld uses a local address, and the
		// kernel drops its error as a martian.
		in.answer(replyNetUnreachable, ip, pkt, ip.Dst)
		in.count(drop.Inside, drop.NoRoute, pkt, netip.AddrPort{})
		return nil, false
	}
	// Errors about a known peer come from the far end of the tunnel, the
	// peer's TUN address, for the same reason.
	far := peer.Subnet.Addr().As4()
	if wire > in.mtu {
		if ip.DF {
			in.answer(replyFragNeeded, ip, pkt, far)
		}
		in.count(drop.Inside, drop.TooBig, pkt, peer.AddrPort())
		return nil, false
	}
	if !in.keepTTL && !packet.DecrementTTL(pkt) {
		in.answer(replyTimeExceeded, ip, pkt, far)
		in.count(drop.Inside, drop.TTLExpired, pkt, peer.AddrPort())
		return nil, false
	}
	return peer, true
}

// icmpReply is the ICMP error the inside direction sends back to a pod.
type icmpReply uint8

const (
	replyNetUnreachable icmpReply = iota
	replyFragNeeded
	replyTimeExceeded
)

// answer queues an ICMP error about pkt for the pod that sent it, to be
// written into the TUN after the batch.
func (in *inside) answer(kind icmpReply, ip packet.IPv4, pkt []byte, src [4]byte) {
	if !packet.ShouldAnswer(ip, pkt) {
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
		n, err = packet.TimeExceeded(buf, pkt, src)
	case replyFragNeeded:
		n, err = packet.DestUnreachable(buf, pkt, src, packet.CodeFragNeeded, uint16(in.mtu))
	default:
		n, err = packet.DestUnreachable(buf, pkt, src, packet.CodeNetUnreachable, 0)
	}
	if err == nil {
		in.icmpWritten(n)
	}
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

// sendBatch sends msgs on the IPv4 socket, then what is queued for the
// IPv6 one (send6).
func (in *inside) sendBatch(msgs []encap.Message) {
	switch {
	case len(msgs) == 1 && in.nout6 == 0 && in.sendLone(&msgs[0]):
		return
	case len(msgs) == 0 && in.nout6 == 1 && in.sendLone(&in.msgs6[0]):
		in.nout6 = 0
		return
	}
	in.sendOn(in.conn, msgs)
	in.send6()
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
