package udp

import (
	"net/netip"

	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/routetable"
)

// inner is the header of an inner packet of either family, parsed once:
// the per-packet decisions of both directions (route, acceptInner,
// sourceOK, answer) run on it whatever the family, and fam picks the
// family's state (env.fams).
type inner struct {
	fam int         // ipv4 or ipv6
	ip4 packet.IPv4 // the header when fam is ipv4
	ip6 packet.IPv6 // the header when fam is ipv6
}

// The families, as indexes of env.fams.
const (
	ipv4 = iota
	ipv6
)

// isIPv6 reports whether pkt claims to be IPv6 (version nibble 6).
func isIPv6(pkt []byte) bool { return len(pkt) > 0 && pkt[0]>>4 == 6 }

// parse validates pkt as IPv6 when it claims to be and the network
// carries IPv6 (carry6), else as IPv4: flanneld's udp backend carries
// IPv4 only, and a packet of a family the network does not carry is
// malformed for it. Extension headers are passed through. h is the
// half's own (inside.hdr, outside.hdr): parsed in place, the header of
// the other family is neither zeroed nor copied.
func (h *inner) parse(pkt []byte, carry6 bool) (err error) {
	if carry6 && isIPv6(pkt) {
		h.fam = ipv6
		h.ip6, err = packet.ParseIPv6(pkt)
		return err
	}
	h.fam = ipv4
	h.ip4, err = packet.ParseIPv4(pkt)
	return err
}

func (h *inner) src() netip.Addr {
	if h.fam == ipv6 {
		return netip.AddrFrom16(h.ip6.Src)
	}
	return netip.AddrFrom4(h.ip4.Src)
}

func (h *inner) dst() netip.Addr {
	if h.fam == ipv6 {
		return netip.AddrFrom16(h.ip6.Dst)
	}
	return netip.AddrFrom4(h.ip4.Dst)
}

// len is the packet's length as its header declares it: bytes after it
// are padding.
func (h *inner) len() int {
	if h.fam == ipv6 {
		return h.ip6.Len()
	}
	return int(h.ip4.TotalLen)
}

// decrementTTL lowers pkt's TTL or hop limit, false when it ran out.
func (h *inner) decrementTTL(pkt []byte) bool {
	if h.fam == ipv6 {
		return packet.DecrementHopLimit(pkt)
	}
	return packet.DecrementTTL(pkt)
}

// fam is the state of one inner family that a half reads: the families
// differ only in these values.
type fam struct {
	mtu     int          // the overlay MTU for inner packets of the family
	own     netip.Prefix // this host's lease subnet; zero when the family is not carried
	network netip.Prefix // Options.Network or Network6, for ForeignSources
}

// lookupDst is the peer whose subnet holds the packet's destination.
func (h *inner) lookupDst(snap *routetable.Snapshot) (*routetable.Peer, bool) {
	if h.fam == ipv6 {
		return snap.Lookup6(h.ip6.Dst)
	}
	return snap.Lookup(h.ip4.Dst)
}

// lookupSrc is the peer whose subnet holds the packet's source.
func (h *inner) lookupSrc(snap *routetable.Snapshot) (*routetable.Peer, bool) {
	if h.fam == ipv6 {
		return snap.Lookup6(h.ip6.Src)
	}
	return snap.Lookup(h.ip4.Src)
}
