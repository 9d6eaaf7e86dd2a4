package udp

import (
	"net/netip"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/offload"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/internal/trace"
	"github.com/flannelu/flannelu/routetable"
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

// worker owns one TUN queue and a socket per underlay family, forwarding
// both directions from one OS thread (loop_linux.go): inside (TUN to UDP)
// and outside (UDP to TUN; out6 for the IPv6 socket of a dual-stack host).
// The halves share nothing mutable, and their types show it: each holds
// its own buffers and state, a copy of env, and the queue and socket
// handles.
type worker struct {
	in   *inside
	out  *outside
	out6 *outside // nil unless the host has both an IPv4 and an IPv6 socket
}

// env is what a half needs from its backend: values fixed at Start, and
// the route table, counters and tracer, which are safe for concurrent use.
// Each half holds its own copy.
type env struct {
	routes *routetable.Table
	drops  *drop.Counters
	tracer *trace.Tracer // nil when tracing is off
	fams   [2]fam        // by inner family: ipv4, ipv6
	vnet   bool          // the TUN carries virtio-net headers (offload mode)
	encap  encap.Encapsulation
	// keepTTL leaves inner TTLs alone (IPIP, as the kernel's ipip device:
	// the tunnel is no hop). The udp backend lowers them on each side, as
	// flanneld's proxy does.
	keepTTL bool
	// The host's underlays: an IPv4 socket, an IPv6 socket.
	under4, under6 bool
	// Options.ForeignSources (see sourceOK).
	foreignSources bool
}

// inside is the TUN to UDP half: everything its goroutine writes.
type inside struct {
	env
	q *tun.Queue // reads pod packets, writes ICMP errors back
	// by underlay (viaIPv4, viaIPv6): the socket (nil where the host has
	// none), what goes out on it, pointing into bufs and heads, and how
	// many of those are queued
	conns [2]*encap.Conn
	msgs  [2][]encap.Message
	nout  [2]int

	bufs  [][]byte // TUN read buffers, headroom + a whole frame each
	sizes []int
	hdr   inner    // the header of the packet being routed
	icmp  [][]byte // ICMP errors to write back into the TUN
	nicmp int
	limit icmpLimiter

	// offload mode: segments of split super-packets, their rewritten
	// headers in heads (MaxHeaderLen slots) and their payloads slices of
	// bufs; segUsed of them are queued
	heads    [][]byte
	payloads [][]byte
	segUsed  int
}

// outside is the UDP to TUN half: everything its goroutine writes.
type outside struct {
	env
	conn *encap.Conn // receives datagrams (IPv4 or IPv6 underlay)
	q    *tun.Queue  // writes packets for local pods

	bufs [][]byte // socket read buffers, headroom + a whole datagram (or GRO run) each
	msgs []encap.Message
	hdr  inner    // the header of the inner packet being checked
	tun  [][]byte // plain mode: what goes to the TUN, bufs[i][:headroom+n]

	// offload mode: accepted packets waiting to be coalesced, slices of bufs
	pkts  [][]byte
	npkts int
	co    *offload.Coalescer
	lone  [1][]byte // writeLone's one frame
}

// newWorker allocates a worker's buffers. A nil q (tests of the per-packet
// decisions) gets the default batch size. conn is the IPv4 socket, conn6
// the IPv6 one; either may be nil.
func newWorker(b *Backend, q *tun.Queue, conn, conn6 *encap.Conn) *worker {
	n := tun.DefaultBatchSize
	if q != nil {
		n = q.BatchSize()
	}
	e := env{routes: b.routes, drops: &b.drops, tracer: b.tracer,
		fams: [2]fam{{mtu: b.mtu, own: b.own, network: b.opts.Network}, {mtu: b.mtu6, own: b.own6, network: b.opts.Network6}},
		vnet: b.vnet, encap: b.opts.Encap, keepTTL: b.opts.Encap == encap.IPIP, under4: b.has4(), under6: b.has6(),
		foreignSources: b.opts.ForeignSources}
	coalesceUDP := b.vnet && b.dev.Offloads().Has(tun.OffloadUSO4) && (!b.own6.IsValid() || b.dev.Offloads().Has(tun.OffloadUSO6))
	w := &worker{in: newInside(e, q, conn, conn6, n)}
	switch {
	case conn != nil && conn6 != nil:
		w.out, w.out6 = newOutside(e, q, conn, n, coalesceUDP), newOutside(e, q, conn6, n, coalesceUDP)
	case conn6 != nil:
		w.out = newOutside(e, q, conn6, n, coalesceUDP)
	default:
		w.out = newOutside(e, q, conn, n, coalesceUDP)
	}
	return w
}

func newInside(e env, q *tun.Queue, conn, conn6 *encap.Conn, n int) *inside {
	queue := n
	if e.vnet {
		queue = n + segSlots
	}
	in := &inside{
		env: e, q: q, conns: [2]*encap.Conn{conn, conn6},
		bufs: makeBufs(n, headroom+packet.VirtioNetHdrLen+maxPacket), sizes: make([]int, n),
		msgs: [2][]encap.Message{make([]encap.Message, queue), make([]encap.Message, queue)},
		icmp: makeBufs(n, headroom+max(packet.MaxICMPErrorLen, packet.MaxICMPv6ErrorLen)),
	}
	if e.vnet {
		in.heads = makeBufs(segSlots, offload.MaxHeaderLen)
		in.payloads = make([][]byte, segSlots)
	}
	return in
}

// newOutside allocates the outside half; coalesceUDP lets its coalescer
// merge UDP datagrams too (the TUN accepts USO super-packets).
func newOutside(e env, q *tun.Queue, conn *encap.Conn, n int, coalesceUDP bool) *outside {
	o := &outside{env: e, conn: conn, q: q}
	readBatch := n
	if e.vnet {
		if e.encap != encap.IPIP {
			readBatch = n / 2 // GRO runs: each message may hold dozens of datagrams
		}
		o.pkts = make([][]byte, n)
		o.co = offload.NewCoalescer(offload.CoalescerOptions{MaxBatch: n, UDP: coalesceUDP})
	}
	o.bufs = makeBufs(readBatch, headroom+maxPacket)
	o.msgs = make([]encap.Message, readBatch)
	o.tun = make([][]byte, readBatch)
	for i := range o.msgs {
		o.msgs[i].Buf = o.bufs[i][headroom:]
	}
	return o
}

// step moves up to k packets from the TUN to the socket.
func (in *inside) step(k int) error {
	if in.vnet {
		return in.batchOffload(min(k, len(in.bufs)))
	}
	return in.batch(min(k, len(in.bufs)))
}

// step moves up to k messages from the socket to the TUN.
func (o *outside) step(k int) error {
	if o.vnet {
		return o.batchOffload(min(k, len(o.msgs)))
	}
	return o.batch(min(k, len(o.msgs)))
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
func (e *env) count(dir drop.Direction, reason drop.Reason, pkt []byte, peer netip.AddrPort) {
	e.drops.Add(dir, reason, 1)
	if t := e.tracer; t != nil {
		t.Packet(dir, pkt, peer, reason.String())
	}
}

func (e *env) traceForwarded(dir drop.Direction, pkt []byte, peer netip.AddrPort) {
	if t := e.tracer; t != nil {
		t.Packet(dir, pkt, peer, trace.Forwarded)
	}
}

// writeTUN writes bufs (packets at offset) into the TUN queue q; see
// writeEach.
func (e *env) writeTUN(q *tun.Queue, bufs [][]byte, offset int, dir drop.Direction) int {
	return writeEach(e.drops, bufs, dir, func(b [][]byte) (int, error) { return q.Write(b, offset) })
}

// writeEach hands pkts to write, one of the TUN queue's batch writes, until
// every packet is written or refused: a packet the kernel refuses is
// dropped and counted and the rest still go. It returns how many were
// written.
func writeEach[P any](drops *drop.Counters, pkts []P, dir drop.Direction, write func([]P) (int, error)) int {
	written := 0
	for len(pkts) > 0 {
		n, err := write(pkts)
		written += n
		if err != nil {
			if isClosed(err) {
				return written // Run is stopping the worker
			}
			drops.Add(dir, drop.WriteError, 1)
			n++ // pkts[n] was refused
		}
		pkts = pkts[min(n, len(pkts)):]
	}
	return written
}
