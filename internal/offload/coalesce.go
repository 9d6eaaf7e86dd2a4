package offload

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"

	"github.com/flannelu/flannelu/internal/packet"
)

// CoalescerOptions configures a Coalescer.
type CoalescerOptions struct {
	// MaxBatch is the largest len(bufs) expected; the tables are sized for
	// it at construction. A larger batch still works but grows them once
	// (that call allocates). 0 means 128.
	MaxBatch int
	// UDP enables merging UDP datagrams into GSO_UDP_L4 super-packets. Set
	// it only when the TUN accepted TUN_F_USO4|TUN_F_USO6 (Linux 6.2+);
	// otherwise the kernel rejects such writes.
	UDP bool
}

// Coalescer is GRO in software for the TUN write side: it merges received
// TCP segments (and, if enabled, UDP datagrams) of one flow into
// super-packets the kernel accepts with a virtio_net_hdr, so that the stack
// sees one 64 KiB packet instead of 44 small ones. It copies no payload: a
// super-packet is written as a list of parts (one writev), the head
// packet's headers rewritten in place followed by the other packets'
// payloads where they lie.
//
// A Coalescer is not safe for concurrent use; use one per writer goroutine.
type Coalescer struct {
	udp    bool
	seed   maphash.Seed
	gen    uint32 // slots from an earlier call have an older gen: empty
	table  []slot // open addressing, len a power of two >= 2*batch
	groups []group
	next   []int32  // next[i]: the packet merged after packet i, -1 if none
	hdrs   []byte   // one virtio_net_hdr per group
	parts  [][]byte // every write's parts, back to back
	out    [][][]byte
}

// MaxSegments bounds the packets merged into one super-packet, and so the
// parts of one write (MaxSegments+1, far below the kernel's 1024 iovecs).
// 64 is what the kernel's own GRO merges at most.
const MaxSegments = 64

// NewCoalescer returns a Coalescer with its tables allocated; Coalesce does
// not allocate for batches up to opts.MaxBatch.
func NewCoalescer(opts CoalescerOptions) *Coalescer {
	c := &Coalescer{udp: opts.UDP, seed: maphash.MakeSeed()}
	batch := opts.MaxBatch
	if batch <= 0 {
		batch = 128
	}
	c.grow(batch)
	return c
}

func (c *Coalescer) grow(batch int) {
	size := 16
	for size < 2*batch {
		size *= 2
	}
	c.table = make([]slot, size)
	c.gen = 0
	c.groups = make([]group, 0, batch)
	c.next = make([]int32, batch)
	c.hdrs = make([]byte, batch*packet.VirtioNetHdrLen)
	c.parts = make([][]byte, 0, 2*batch)
	c.out = make([][][]byte, 0, batch)
}

// Coalesce merges the batch of plain IP packets pkts and returns what to
// write to the TUN, in order: each element is one write given as its parts,
// to be concatenated by one writev (tun.Queue.WriteParts). The first part is
// a packet.VirtioNetHdrLen-byte virtio_net_hdr, the second a packet of pkts, and a
// merged super-packet continues with the payloads of the packets merged
// into it.
//
// Buffer ownership: a merged group is headed by its first packet, whose
// headers are rewritten in place (IP length, IPv4 header checksum, PSH of
// the last segment, UDP length, pseudo-header partial checksum); every
// other packet is only read. The result refers to the memory of pkts and to
// the Coalescer's own header storage: it is valid until the next call and
// as long as the caller leaves pkts' memory alone. The returned slices
// belong to the Coalescer.
//
// Merged are consecutive packets of one flow (same addresses, ports and
// protocol) with valid checksums, contiguous TCP sequence numbers, equal IP
// TOS/TTL/DF (IPv6 traffic class, flow label, hop limit), equal TCP ack,
// window, flags and options, no SYN/FIN/RST/URG/CWR and no IPv4 options or
// fragments, where every payload has the size of the first but the last,
// which may be shorter (or carry PSH) and ends the group; a group stays
// within 65535 bytes and MaxSegments packets. A packet of the flow that
// cannot join ends the group before it, so order within a flow is kept;
// packets of different flows may be reordered relative to each other.
// Anything else is written unchanged with a zero header.
func (c *Coalescer) Coalesce(pkts [][]byte) [][][]byte {
	c.reset(len(pkts))
	for i, pkt := range pkts {
		c.next[i] = -1
		c.add(pkts, i, pkt)
	}
	return c.finish(pkts)
}

func (c *Coalescer) reset(batch int) {
	if batch > cap(c.groups) {
		c.grow(batch)
	}
	c.gen++
	if c.gen == 0 { // wrapped: old stamps could look current
		clear(c.table)
		c.gen = 1
	}
	c.groups = c.groups[:0]
	c.parts = c.parts[:0]
	c.out = c.out[:0]
}

// add places packet i: into the open group of its flow, as the head of a new
// group, or as a plain packet.
func (c *Coalescer) add(pkts [][]byte, i int, pkt []byte) {
	var cd candidate
	if !cd.classify(pkt, c.udp) {
		c.newGroup(i, kindPlain, &cd)
		return
	}
	s := c.lookup(&cd.key)
	if s.group >= 0 && c.tryMerge(&c.groups[s.group], pkts[c.groups[s.group].head], i, pkt, &cd) {
		return
	}
	// Whatever happens now, this packet ends the flow's open group: a later
	// packet must not be merged into a group that this one would follow.
	if cd.canHead {
		s.group = int32(c.newGroup(i, cd.kind, &cd))
		return
	}
	s.group = -1
	c.newGroup(i, kindPlain, &cd)
}

func (c *Coalescer) newGroup(i int, kind groupKind, cd *candidate) int {
	g := group{head: i, tail: i, kind: kind, length: cd.size, segs: 1}
	if kind != kindPlain {
		g.ip, g.hdrLen, g.gsoSize = cd.ip, cd.hdrLen, cd.payload
		g.nextSeq = cd.seq + uint32(cd.payload)
	}
	c.groups = append(c.groups, g)
	return len(c.groups) - 1
}

func (c *Coalescer) lookup(k *flowKey) *slot {
	mask := uint64(len(c.table) - 1)
	for i := maphash.Bytes(c.seed, k[:]) & mask; ; i = (i + 1) & mask {
		s := &c.table[i]
		if s.gen != c.gen {
			*s = slot{gen: c.gen, group: -1, key: *k}
			return s
		}
		if s.key == *k {
			return s
		}
	}
}

// tryMerge links packet i (pkt) behind group g, whose head packet is head,
// if pkt may follow it.
func (c *Coalescer) tryMerge(g *group, head []byte, i int, pkt []byte, cd *candidate) bool {
	if g.closed || !cd.canJoin || g.kind != cd.kind || cd.payload > g.gsoSize || cd.hdrLen != g.hdrLen {
		return false
	}
	newLen := g.length + cd.payload
	if newLen > maxIPPacket || g.segs == MaxSegments {
		return false
	}
	if !sameIPFields(head, pkt, cd.ip.v6) {
		return false
	}
	if cd.kind == kindTCP && (cd.seq != g.nextSeq || !sameTCPFields(head, pkt, g.ip.l4Off, g.hdrLen)) {
		return false
	}
	c.next[g.tail] = int32(i)
	g.tail = i
	g.length = newLen
	g.segs++
	g.nextSeq += uint32(cd.payload)
	if cd.payload < g.gsoSize || cd.flags&tcpPSH != 0 {
		g.closed = true
		g.psh = cd.flags&tcpPSH != 0
	}
	return true
}

// sameIPFields reports whether the IP header fields the kernel copies from
// the head to every segment are equal in a and b.
func sameIPFields(a, b []byte, v6 bool) bool {
	if v6 {
		return bytes.Equal(a[0:4], b[0:4]) && a[7] == b[7] // version, class, flow label; hop limit
	}
	return a[1] == b[1] && a[8] == b[8] && a[6]&0x40 == b[6]&0x40 // TOS, TTL, DF
}

// sameTCPFields compares ack, flags (but PSH), window and options.
func sameTCPFields(a, b []byte, l4Off, hdrLen int) bool {
	ta, tb := a[l4Off:hdrLen], b[l4Off:hdrLen]
	return bytes.Equal(ta[8:12], tb[8:12]) && ta[13] == tb[13]&^tcpPSH &&
		bytes.Equal(ta[14:16], tb[14:16]) && bytes.Equal(ta[tcpMinHdr:], tb[tcpMinHdr:])
}

// finish writes the virtio header of every group and collects the writes.
func (c *Coalescer) finish(pkts [][]byte) [][][]byte {
	for k := range c.groups {
		g := &c.groups[k]
		hdr := c.hdrs[k*packet.VirtioNetHdrLen : (k+1)*packet.VirtioNetHdrLen]
		var h packet.VirtioNetHdr
		if g.segs > 1 {
			h = g.seal(pkts[g.head])
		}
		_ = h.Encode(hdr) // hdr is packet.VirtioNetHdrLen long
		first := len(c.parts)
		c.parts = append(c.parts, hdr, pkts[g.head])
		for j := c.next[g.head]; j >= 0; j = c.next[j] {
			c.parts = append(c.parts, pkts[j][g.hdrLen:])
		}
		c.out = append(c.out, c.parts[first:len(c.parts):len(c.parts)])
	}
	return c.out
}

// seal fixes the headers of the group's head packet for the whole
// super-packet of g.length bytes and returns its virtio header: lengths,
// IPv4 header checksum, PSH if the last segment had it, and the
// pseudo-header partial checksum the kernel completes.
func (g *group) seal(pkt []byte) packet.VirtioNetHdr {
	setIPLength(pkt, g.ip, g.length)
	l4 := pkt[g.ip.l4Off:]
	l4Len := g.length - g.ip.l4Off
	h := packet.VirtioNetHdr{
		Flags:     packet.FlagNeedsCsum,
		HdrLen:    uint16(g.hdrLen),
		GSOSize:   uint16(g.gsoSize),
		CsumStart: uint16(g.ip.l4Off),
	}
	switch {
	case g.kind == kindUDP:
		binary.BigEndian.PutUint16(l4[4:6], uint16(l4Len))
		h.GSOType, h.CsumOffset = packet.GSOUDPL4, udpCsumOffset
	case g.ip.v6:
		h.GSOType, h.CsumOffset = packet.GSOTCPv6, tcpCsumOffset
	default:
		h.GSOType, h.CsumOffset = packet.GSOTCPv4, tcpCsumOffset
	}
	if g.kind == kindTCP && g.psh {
		l4[13] |= tcpPSH
	}
	src, dst := addrs(pkt, g.ip)
	binary.BigEndian.PutUint16(l4[h.CsumOffset:], packet.Fold(packet.PseudoSum(g.ip.proto, src, dst, l4Len)))
	return h
}
