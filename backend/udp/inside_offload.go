package udp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/offload"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/routetable"
)

// batchOffload is batch for a TUN opened with IFF_VNET_HDR:
// each frame starts with a virtio-net header and may be a TCP or UDP
// super-packet of up to 64 KiB. Super-packets are cut here into packets
// of at most the overlay MTU (the wire stays flanneld's: one inner packet
// per datagram), and the socket sends each peer's run of equal-sized
// datagrams with one UDP_SEGMENT sendmsg. It allocates nothing.
func (in *inside) batchOffload(k int) error {
	n, err := in.q.Read(in.bufs[:k], in.sizes, headroom)
	if err != nil {
		return fmt.Errorf("read TUN: %w", err)
	}
	snap := in.routes.Snapshot()
	in.segUsed = 0
	for i, buf := range in.bufs[:n] {
		frame := buf[headroom : headroom+in.sizes[i]]
		var hdr packet.VirtioNetHdr
		if hdr.Decode(frame) != nil {
			in.count(drop.Inside, drop.Malformed, frame, netip.AddrPort{})
			continue
		}
		pkt := frame[packet.VirtioNetHdrLen:]
		if hdr.GSOType == packet.GSONone {
			if hdr.Flags&packet.FlagNeedsCsum != 0 && offload.CompleteChecksum(pkt, hdr) != nil {
				in.count(drop.Inside, drop.Malformed, pkt, netip.AddrPort{})
				continue
			}
			in.queue(pkt, snap)
			continue
		}
		in.splitAndQueue(pkt, hdr, snap)
	}
	in.sendBatch()
	in.flushICMP()
	return nil
}

// splitAndQueue cuts one super-packet into segments, each its rewritten
// headers in a header slot and its payload left where the TUN read put
// it (the kernel gathers the two from the sendmsg's iovecs: no payload
// is copied here), and queues them. The segments share one IP header, so
// the super-packet is routed once: one lookup, one MTU check of its
// largest segment, one TTL check. When the slots run out it first sends
// what is queued, which keeps the order of every flow.
func (in *inside) splitAndQueue(pkt []byte, hdr packet.VirtioNetHdr, snap *routetable.Snapshot) {
	k, err := offload.Split(pkt, hdr, in.heads[in.segUsed:], in.payloads[in.segUsed:])
	if errors.Is(err, offload.ErrNoRoom) && in.segUsed > 0 {
		in.sendBatch()
		in.segUsed = 0
		k, err = offload.Split(pkt, hdr, in.heads, in.payloads)
	}
	if err != nil {
		reason := drop.Malformed
		if errors.Is(err, offload.ErrNoRoom) {
			reason = drop.TooBig // more segments than a batch holds: a tiny MSS
		}
		in.count(drop.Inside, reason, pkt, netip.AddrPort{})
		return
	}
	heads, payloads := in.heads[in.segUsed:in.segUsed+k], in.payloads[in.segUsed:in.segUsed+k]
	peer, ok := in.route(pkt, len(heads[0])+len(payloads[0]), snap)
	if !ok {
		return
	}
	in.segUsed += k
	via := in.underlay(peer, pkt)
	if via == viaNone {
		in.count(drop.Inside, drop.NoRoute, pkt, netip.AddrPort{})
		return
	}
	for i, head := range heads {
		// route lowered the super-packet's TTL, whose header Split
		// had already copied: each segment's header gets the same.
		switch {
		case in.keepTTL:
		case isIPv6(head):
			packet.DecrementHopLimit(head)
		default:
			packet.DecrementTTL(head)
		}
		in.push(head, payloads[i], peer, via)
	}
}
