package udp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/drop"
	"github.com/flannelu/flannelu/offload"
	"github.com/flannelu/flannelu/packet"
	"github.com/flannelu/flannelu/routetable"
)

// batchOffload is batch for a TUN opened with IFF_VNET_HDR:
// each frame starts with a virtio-net header and may be a TCP or UDP
// super-packet of up to 64 KiB. Super-packets are split here into packets
// of at most the overlay MTU (the wire stays flanneld's: one inner packet
// per datagram), and the socket sends each peer's run of equal-sized
// datagrams with one UDP_SEGMENT sendmsg. It allocates nothing.
func (in *inside) batchOffload(k int) error {
	n, err := in.q.Read(in.bufs[:k], in.sizes, headroom)
	if err != nil {
		return fmt.Errorf("read TUN: %w", err)
	}
	snap := in.routes.Snapshot()
	out := 0
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
			out = in.queue(pkt, snap, out)
			continue
		}
		out = in.splitAndQueue(pkt, hdr, snap, out)
	}
	in.sendBatch(in.msgs[:out])
	in.flushICMP()
	return nil
}

// splitAndQueue splits one super-packet into the free segment buffers and
// queues each segment. When the buffers run out it first sends what is
// queued, which keeps the order of every flow.
func (in *inside) splitAndQueue(pkt []byte, hdr packet.VirtioNetHdr, snap *routetable.Snapshot, out int) int {
	k, err := offload.Split(pkt, hdr, in.segs[in.segUsed:], in.segSizes[in.segUsed:], headroom)
	if errors.Is(err, offload.ErrNoRoom) && in.segUsed > 0 {
		in.sendBatch(in.msgs[:out])
		out, in.segUsed = 0, 0
		k, err = offload.Split(pkt, hdr, in.segs, in.segSizes, headroom)
	}
	if err != nil {
		reason := drop.Malformed
		if errors.Is(err, offload.ErrNoRoom) {
			reason = drop.TooBig // more segments than a batch holds: a tiny MSS
		}
		in.count(drop.Inside, reason, pkt, netip.AddrPort{})
		return out
	}
	for j := in.segUsed; j < in.segUsed+k; j++ {
		out = in.queue(in.segs[j][headroom:headroom+in.segSizes[j]], snap, out)
	}
	in.segUsed += k
	return out
}
