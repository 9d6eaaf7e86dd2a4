package offload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
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
// sees one 64 KiB packet instead of 44 small ones.
//
// A Coalescer is not safe for concurrent use; use one per writer goroutine.
type Coalescer struct {
	udp    bool
	seed   maphash.Seed
	gen    uint32 // slots from an earlier call have an older gen: empty
	table  []slot // open addressing, len a power of two >= 2*batch
	groups []group
	out    [][]byte
}

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
	c.out = make([][]byte, 0, batch)
}

// Coalesce merges the batch of plain IP packets bufs[i][offset:offset+sizes[i]]
// and returns what to write to the TUN, in order: each element is one write,
// a slice of some bufs[i] that starts with the VirtioNetHdrLen-byte
// virtio_net_hdr at bufs[i][offset-VirtioNetHdrLen:] and is followed by the
// packet, ready for a batch Write(out, 0) on an IFF_VNET_HDR TUN.
//
// Buffer ownership: every packet is either written as is (GSONone header,
// flags 0) or merged. A merged group lives in the buffer of its first packet
// (the head): the payloads of the following packets are copied to the end of
// the head's packet, which can grow up to len(bufs[head]), so pass bufs with
// their full capacity as length and the packet lengths in sizes. The head's
// headers are rewritten (IP length, IPv4 header checksum, PSH of the last
// segment, UDP length, pseudo-header partial checksum). Buffers whose
// packets were merged into another are not referenced by the result and are
// free for reuse as soon as Coalesce returns; all others are referenced by
// the result until the caller has written it. The returned slice itself
// belongs to the Coalescer and is valid until the next call. bufs[i][:offset]
// below the header is left untouched.
//
// Merged are consecutive packets of one flow (same addresses, ports and
// protocol) with valid checksums, contiguous TCP sequence numbers, equal IP
// TOS/TTL/DF (IPv6 traffic class, flow label, hop limit), equal TCP ack,
// window, flags and options, no SYN/FIN/RST/URG/CWR and no IPv4 options or
// fragments, where every payload has the size of the first but the last,
// which may be shorter (or carry PSH) and ends the group; a group stays
// within 65535 bytes. A packet of the flow that cannot join ends the group
// before it, so order within a flow is kept; packets of different flows may
// be reordered relative to each other. Anything else is written unchanged.
//
// offset must be >= VirtioNetHdrLen, len(sizes) >= len(bufs) and every
// packet must fit its buffer; otherwise Coalesce returns an error and
// changes nothing.
func (c *Coalescer) Coalesce(bufs [][]byte, sizes []int, offset int) ([][]byte, error) {
	if err := checkBatch(bufs, sizes, offset); err != nil {
		return nil, err
	}
	c.reset(len(bufs))
	for i := range bufs {
		c.add(bufs, i, sizes[i], offset)
	}
	return c.finish(bufs, offset), nil
}

func checkBatch(bufs [][]byte, sizes []int, offset int) error {
	if offset < VirtioNetHdrLen {
		return fmt.Errorf("offload: offset %d leaves no room for the %d-byte virtio header", offset, VirtioNetHdrLen)
	}
	if len(sizes) < len(bufs) {
		return fmt.Errorf("offload: %d sizes for %d buffers", len(sizes), len(bufs))
	}
	for i, b := range bufs {
		if sizes[i] < 0 || offset+sizes[i] > len(b) {
			return fmt.Errorf("offload: packet %d of %d bytes at offset %d in a %d-byte buffer", i, sizes[i], offset, len(b))
		}
	}
	return nil
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
	c.out = c.out[:0]
}

// add places packet i: into the open group of its flow, as the head of a new
// group, or as a plain packet.
func (c *Coalescer) add(bufs [][]byte, i, size, offset int) {
	pkt := bufs[i][offset : offset+size]
	var cd candidate
	if !cd.classify(pkt, c.udp) {
		c.newGroup(i, kindPlain, &cd)
		return
	}
	s := c.lookup(&cd.key)
	if s.group >= 0 && c.tryMerge(&c.groups[s.group], bufs, offset, pkt, &cd) {
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
	g := group{head: i, kind: kind, length: cd.size, segs: 1}
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

// tryMerge appends pkt's payload to group g if pkt may follow it.
func (c *Coalescer) tryMerge(g *group, bufs [][]byte, offset int, pkt []byte, cd *candidate) bool {
	if g.closed || !cd.canJoin || g.kind != cd.kind || cd.payload > g.gsoSize || cd.hdrLen != g.hdrLen {
		return false
	}
	newLen := g.length + cd.payload
	if newLen > maxIPPacket || offset+newLen > len(bufs[g.head]) {
		return false
	}
	head := bufs[g.head][offset : offset+g.length]
	if !sameIPFields(head, pkt, cd.ip.v6) {
		return false
	}
	if cd.kind == kindTCP && (cd.seq != g.nextSeq || !sameTCPFields(head, pkt, g.ip.l4Off, g.hdrLen)) {
		return false
	}
	copy(bufs[g.head][offset+g.length:], pkt[cd.hdrLen:])
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
func (c *Coalescer) finish(bufs [][]byte, offset int) [][]byte {
	for i := range c.groups {
		g := &c.groups[i]
		b := bufs[g.head]
		var h VirtioNetHdr
		if g.segs > 1 {
			h = g.seal(b[offset : offset+g.length])
		}
		_ = h.Encode(b[offset-VirtioNetHdrLen : offset]) // room checked by checkBatch
		c.out = append(c.out, b[offset-VirtioNetHdrLen:offset+g.length])
	}
	return c.out
}

// seal fixes the headers of a merged super-packet pkt and returns its
// virtio header: lengths, IPv4 header checksum, PSH if the last segment had
// it, and the pseudo-header partial checksum the kernel completes.
func (g *group) seal(pkt []byte) VirtioNetHdr {
	setIPLength(pkt, g.ip, len(pkt))
	l4 := pkt[g.ip.l4Off:]
	h := VirtioNetHdr{
		Flags:     FlagNeedsCsum,
		HdrLen:    uint16(g.hdrLen),
		GSOSize:   uint16(g.gsoSize),
		CsumStart: uint16(g.ip.l4Off),
	}
	switch {
	case g.kind == kindUDP:
		binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
		h.GSOType, h.CsumOffset = GSOUDPL4, udpCsumOffset
	case g.ip.v6:
		h.GSOType, h.CsumOffset = GSOTCPv6, tcpCsumOffset
	default:
		h.GSOType, h.CsumOffset = GSOTCPv4, tcpCsumOffset
	}
	if g.kind == kindTCP && g.psh {
		l4[13] |= tcpPSH
	}
	src, dst := addrs(pkt, g.ip)
	binary.BigEndian.PutUint16(l4[h.CsumOffset:], Fold(PseudoSum(g.ip.proto, src, dst, len(l4))))
	return h
}
