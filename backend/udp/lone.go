package udp

import (
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
)

// A lone packet, what each turn of a request-response exchange carries,
// goes out with the plainest system call: a sendto for a datagram
// (encap.Conn.TrySend), one write of one frame into the TUN. The batch
// calls (sendmmsg, the coalescer's writev of parts) cost more for one
// packet (BENCHMARKS.md). Anything the plain call refuses (a full socket
// buffer, an unreachable peer) takes the batch path after it, which waits
// for room or counts the drop.

// sendLone sends the one datagram queued for the underlay v, a whole
// packet, and reports whether it went.
func (in *inside) sendLone(v via) bool {
	m := &in.msgs[v][0]
	if in.conns[v] == nil || !in.conns[v].TrySend(m) {
		return false
	}
	in.drops.AddForwarded(drop.Inside, 1, uint64(m.N))
	return true
}

// writeLone writes the one packet gathered (o.pkts[0]) into the TUN as
// one frame, its zero virtio-net header put in the headroom before it,
// and reports whether it went. Only the first datagram of a message that
// is not a GRO run has that headroom.
func (o *outside) writeLone() bool {
	if o.msgs[0].GSOSize != 0 {
		return false
	}
	p, b := o.pkts[0], o.bufs[0]
	// p lies in b, past the headroom (and an IPIP outer header): at
	// cap(b)-cap(p), which has room for the virtio-net header before it.
	at := cap(b) - cap(p)
	if len(p) == 0 || at < headroom || &p[0] != &b[at] {
		return false
	}
	frame := b[at-packet.VirtioNetHdrLen : at+len(p)]
	clear(frame[:packet.VirtioNetHdrLen])
	o.lone[0] = frame
	n, _ := o.q.Write(o.lone[:], 0)
	o.lone[0] = nil
	if n != 1 {
		return false
	}
	o.drops.AddForwarded(drop.Outside, 1, uint64(len(p)))
	return true
}
