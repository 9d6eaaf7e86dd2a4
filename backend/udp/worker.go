package udp

import (
	"net/netip"

	"github.com/flannelu/flannelu/drop"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/packet"
	"github.com/flannelu/flannelu/routetable"
	"github.com/flannelu/flannelu/trace"
	"github.com/flannelu/flannelu/tun"
)

// headroom is reserved before every packet so that a header (the 10-byte
// virtio-net header of an offloading TUN) can be written in place.
const headroom = 16

// maxPacket bounds one buffer: a whole IPv4 packet of any size.
const maxPacket = 65535

// worker owns one TUN queue and one socket. Its inside and outside halves
// run in two goroutines and share nothing but the read-only backend state:
// each has its own buffers, allocated once here.
type worker struct {
	b    *Backend
	q    *tun.Queue
	conn *encap.Conn

	in  inside
	out outside
}

// inside is the TUN to UDP half's state.
type inside struct {
	bufs  [][]byte // TUN read buffers, headroom + maxPacket each
	sizes []int
	msgs  []encap.Message // what goes out, pointing into bufs
	icmp  [][]byte        // ICMP errors to write back into the TUN
	nicmp int
	limit icmpLimiter
}

// outside is the UDP to TUN half's state.
type outside struct {
	bufs [][]byte // socket read buffers, headroom + maxPacket each
	msgs []encap.Message
	tun  [][]byte // what goes to the TUN: bufs[i][:headroom+n]
}

func newWorker(b *Backend, q *tun.Queue, conn *encap.Conn) *worker {
	n := q.BatchSize()
	w := &worker{b: b, q: q, conn: conn}
	w.in = inside{
		bufs: makeBufs(n, headroom+maxPacket), sizes: make([]int, n),
		msgs: make([]encap.Message, n), icmp: makeBufs(n, headroom+packet.MaxICMPErrorLen),
	}
	w.out = outside{bufs: makeBufs(n, headroom+maxPacket), msgs: make([]encap.Message, n), tun: make([][]byte, n)}
	for i := range w.out.msgs {
		w.out.msgs[i].Buf = w.out.bufs[i][headroom:]
	}
	return w
}

func makeBufs(n, size int) [][]byte {
	backing := make([]byte, n*size)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = backing[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}

// count records a verdict for one packet and shows it to the tracer.
func (w *worker) count(dir drop.Direction, reason drop.Reason, pkt []byte, peer netip.AddrPort) {
	w.b.drops.Add(dir, reason, 1)
	if t := w.b.tracer; t != nil {
		t.Packet(dir, pkt, peer, reason.String())
	}
}

func (w *worker) traceForwarded(dir drop.Direction, pkt []byte, peer netip.AddrPort) {
	if t := w.b.tracer; t != nil {
		t.Packet(dir, pkt, peer, trace.Forwarded)
	}
}

func peerAddr(p *routetable.Peer) netip.AddrPort {
	return netip.AddrPortFrom(p.PublicIP, p.Port)
}

// writeTUN writes bufs (packets at headroom) into the TUN queue. A packet
// the kernel refuses is dropped and counted and the rest still go. It
// returns how many were written.
func (w *worker) writeTUN(bufs [][]byte, dir drop.Direction) int {
	written := 0
	for len(bufs) > 0 {
		n, err := w.q.Write(bufs, headroom)
		written += n
		if err != nil {
			if isClosed(err) {
				return written // Run is stopping the worker
			}
			w.b.drops.Add(dir, drop.WriteError, 1)
			n++ // bufs[n] was refused
		}
		bufs = bufs[min(n, len(bufs)):]
	}
	return written
}
