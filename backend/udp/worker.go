package udp

import (
	"net/netip"

	"github.com/flannelu/flannelu/drop"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/offload"
	"github.com/flannelu/flannelu/packet"
	"github.com/flannelu/flannelu/trace"
	"github.com/flannelu/flannelu/tun"
)

// headroom is reserved before every packet so that a header (the 10-byte
// virtio-net header of an offloading TUN) can be written in place.
const headroom = 16

// maxPacket bounds one buffer: a whole IPv4 packet of any size, which is
// also the largest super-packet an offloading TUN or UDP GRO delivers.
const maxPacket = 65535

// segSlots is how many MTU-sized packets one batch of split super-packets
// may produce before the batch is sent: four 64 KiB super-packets at a
// 1448-byte MSS.
const segSlots = 192

// worker owns one TUN queue and one socket. Its inside and outside halves
// run in two goroutines and share nothing but the read-only backend state:
// each has its own buffers, allocated once here.
type worker struct {
	b    *Backend
	q    *tun.Queue
	conn *encap.Conn
	vnet bool // the TUN carries virtio-net headers (offload mode)

	in  inside
	out outside
}

// inside is the TUN to UDP half's state.
type inside struct {
	bufs  [][]byte // TUN read buffers, headroom + a whole frame each
	sizes []int
	msgs  []encap.Message // what goes out, pointing into bufs or segs
	icmp  [][]byte        // ICMP errors to write back into the TUN
	nicmp int
	limit icmpLimiter

	// offload mode: segments of split super-packets
	segs     [][]byte
	segSizes []int
	segUsed  int
}

// outside is the UDP to TUN half's state.
type outside struct {
	bufs [][]byte // socket read buffers, headroom + a whole datagram (or GRO run) each
	msgs []encap.Message
	tun  [][]byte // plain mode: what goes to the TUN, bufs[i][:headroom+n]

	// offload mode: accepted packets waiting to be coalesced, slices of bufs
	pkts  [][]byte
	npkts int
	co    *offload.Coalescer
}

// newWorker allocates a worker's buffers. A nil q (tests of the per-packet
// decisions) gets the default batch size.
func newWorker(b *Backend, q *tun.Queue, conn *encap.Conn, vnet bool) *worker {
	n := tun.DefaultBatchSize
	if q != nil {
		n = q.BatchSize()
	}
	w := &worker{b: b, q: q, conn: conn, vnet: vnet}
	w.in = inside{
		bufs: makeBufs(n, headroom+packet.VirtioNetHdrLen+maxPacket), sizes: make([]int, n),
		msgs: make([]encap.Message, n), icmp: makeBufs(n, headroom+packet.MaxICMPErrorLen),
	}
	readBatch := n
	if vnet {
		readBatch = n / 2 // GRO runs: each message may hold dozens of datagrams
		w.in.msgs = make([]encap.Message, n+segSlots)
		w.in.segs = makeBufs(segSlots, headroom+b.mtu)
		w.in.segSizes = make([]int, segSlots)
		w.out.pkts = make([][]byte, n)
		w.out.co = offload.NewCoalescer(offload.CoalescerOptions{MaxBatch: n, UDP: b.dev.Offloads().Has(tun.OffloadUSO4)})
	}
	w.out.bufs = makeBufs(readBatch, headroom+maxPacket)
	w.out.msgs = make([]encap.Message, readBatch)
	w.out.tun = make([][]byte, readBatch)
	for i := range w.out.msgs {
		w.out.msgs[i].Buf = w.out.bufs[i][headroom:]
	}
	return w
}

// runInside is the TUN to UDP direction; it returns when the TUN or
// socket is closed.
func (w *worker) runInside() error {
	batch := w.insideBatch
	if w.vnet {
		batch = w.insideBatchOffload
	}
	return loop(batch)
}

// runOutside is the UDP to TUN direction; it returns when the socket or
// TUN is closed.
func (w *worker) runOutside() error {
	batch := w.outsideBatch
	if w.vnet {
		batch = w.outsideBatchOffload
	}
	return loop(batch)
}

func loop(batch func() error) error {
	for {
		if err := batch(); err != nil {
			if isClosed(err) {
				return nil
			}
			return err
		}
	}
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

// writeTUN writes bufs (packets at offset) into the TUN queue; see
// writeEach.
func (w *worker) writeTUN(bufs [][]byte, offset int, dir drop.Direction) int {
	return writeEach(w, bufs, dir, func(b [][]byte) (int, error) { return w.q.Write(b, offset) })
}

// writeEach hands pkts to write, one of the TUN queue's batch writes, until
// every packet is written or refused: a packet the kernel refuses is
// dropped and counted and the rest still go. It returns how many were
// written.
func writeEach[P any](w *worker, pkts []P, dir drop.Direction, write func([]P) (int, error)) int {
	written := 0
	for len(pkts) > 0 {
		n, err := write(pkts)
		written += n
		if err != nil {
			if isClosed(err) {
				return written // Run is stopping the worker
			}
			w.b.drops.Add(dir, drop.WriteError, 1)
			n++ // pkts[n] was refused
		}
		pkts = pkts[min(n, len(pkts)):]
	}
	return written
}
