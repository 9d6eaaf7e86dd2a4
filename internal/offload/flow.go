package offload

import (
	"encoding/binary"

	"github.com/flannelu/flannelu/internal/packet"
)

type groupKind uint8

const (
	kindPlain groupKind = iota // written unchanged with a packet.GSONone header
	kindTCP
	kindUDP
)

// group is one write: a plain packet or a super-packet, its packets linked
// from head through Coalescer.next.
type group struct {
	head    int // index into pkts of the first packet, whose headers the write carries
	tail    int // index of the last packet merged so far
	kind    groupKind
	ip      ipInfo // of the head packet
	hdrLen  int    // L3+L4 header bytes
	gsoSize int    // payload of the head; every segment but the last has it
	length  int    // bytes of the packet so far
	segs    int
	nextSeq uint32 // TCP sequence number the next segment must have
	closed  bool   // a short or PSH segment was merged: nothing may follow
	psh     bool
}

// flowKey identifies a flow: protocol, IP version, addresses, ports.
type flowKey [40]byte

type slot struct {
	gen   uint32
	group int32 // index of the flow's open group, -1 if none
	key   flowKey
}

// candidate is what the Coalescer learns about one received packet.
type candidate struct {
	ip      ipInfo
	kind    groupKind
	size    int
	hdrLen  int
	payload int
	seq     uint32
	flags   uint8
	canJoin bool // may be merged into an open group of its flow
	canHead bool // may start a group
	key     flowKey
}

// classify fills cd from pkt and reports whether pkt is a TCP (or, if udp,
// a UDP) packet that belongs to a flow; only then are key and the can*
// fields meaningful.
func (cd *candidate) classify(pkt []byte, udp bool) bool {
	cd.size = len(pkt)
	ip, err := parseIP(pkt)
	if err != nil || (ip.proto == protoUDP && !udp) {
		return false
	}
	l4Len, err := l4HdrLen(pkt, ip)
	if err != nil {
		return false
	}
	cd.ip, cd.hdrLen = ip, ip.l4Off+l4Len
	cd.payload = len(pkt) - cd.hdrLen
	cd.kind = kindUDP
	if ip.proto == protoTCP {
		cd.kind = kindTCP
	}
	cd.key = makeKey(pkt, ip)
	cd.canJoin = cd.payload > 0 && (ip.v6 || ip.l4Off == packet.HeaderLen)
	if cd.kind == kindTCP {
		l4 := pkt[ip.l4Off:]
		cd.seq = binary.BigEndian.Uint32(l4[4:8])
		cd.flags = l4[13]
		cd.canJoin = cd.canJoin && cd.flags&(tcpSYN|tcpFIN|tcpRST|tcpURG|tcpCWR) == 0
	}
	// Merged payloads get a checksum computed anew by the kernel, which
	// would bless a corrupted segment: only packets that verify may join.
	cd.canJoin = cd.canJoin && l4Valid(pkt, ip)
	cd.canHead = cd.canJoin && cd.flags&tcpPSH == 0
	return true
}

// l4Valid verifies the TCP/UDP checksum of pkt (a UDP/IPv4 checksum of 0
// means none was sent and is accepted).
func l4Valid(pkt []byte, ip ipInfo) bool {
	l4 := pkt[ip.l4Off:]
	if ip.proto == protoUDP && !ip.v6 && l4[6] == 0 && l4[7] == 0 {
		return true
	}
	return packet.Checksum(l4, packet.PseudoSum(ip.proto, ip.src, ip.dst, len(l4))) == 0
}

func makeKey(pkt []byte, ip ipInfo) flowKey {
	var k flowKey
	k[0] = ip.proto
	if ip.v6 {
		k[1] = 6
	}
	copy(k[2:18], ip.src)
	copy(k[18:34], ip.dst)
	copy(k[34:38], pkt[ip.l4Off:ip.l4Off+4]) // ports
	return k
}
