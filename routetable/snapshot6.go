package routetable

import "encoding/binary"

// index6 is a Snapshot's IPv6 half: the peers' IPv6 subnets by prefix
// length, longest first, and their IPv6 public addresses. It is apart
// from the IPv4 levels so that IPv4 lookups do exactly what they did
// before IPv6 (BenchmarkLookup, see the commit).
type index6 struct {
	levels   []level6
	byPublic map[[16]byte]int32
}

// level6 indexes the IPv6 subnets of one prefix length. Leases are cut
// from one IPv6Network (/64s of a /48 by default), so for lengths up to
// 64 the keys (the address's top bits) are usually close and a dense
// array answers; other levels use a map of the masked address.
type level6 struct {
	bits   uint8
	base   uint64
	dense  []int32
	sparse map[[2]uint64]int32
}

// Entries hold peer index + 1, as in level.

func halves(a [16]byte) (hi, lo uint64) {
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
}

// masked keeps the top bits of the 128-bit address hi:lo.
func masked(hi, lo uint64, bits uint8) [2]uint64 {
	if bits <= 64 {
		return [2]uint64{hi &^ (^uint64(0) >> bits), 0}
	}
	return [2]uint64{hi, lo &^ (^uint64(0) >> (bits - 64))}
}

// denseKey is the dense array's key: the top bits as an integer (Go's
// shift by 64 gives 0, the one key of a /0).
func denseKey(hi uint64, bits uint8) uint64 { return hi >> (64 - bits) }

func (l *level6) find(hi, lo uint64) int32 {
	if l.dense != nil {
		if i := denseKey(hi, l.bits) - l.base; i < uint64(len(l.dense)) {
			return l.dense[i]
		}
		return 0
	}
	return l.sparse[masked(hi, lo, l.bits)]
}

// Lookup6 returns the peer whose IPv6 subnet is the longest prefix
// containing dst.
func (s *Snapshot) Lookup6(dst [16]byte) (*Peer, bool) {
	hi, lo := halves(dst)
	for i := range s.v6.levels {
		if idx := s.v6.levels[i].find(hi, lo); idx != 0 {
			return &s.peers[idx-1], true
		}
	}
	return nil, false
}

// IsPeer6 returns the peer whose public IPv6 address is src, as IsPeer
// does for IPv4.
func (s *Snapshot) IsPeer6(src [16]byte) (*Peer, bool) {
	idx, ok := s.v6.byPublic[src]
	if !ok {
		return nil, false
	}
	return &s.peers[idx], true
}

func buildIndex6(peers []Peer) index6 {
	x := index6{byPublic: map[[16]byte]int32{}}
	var byBits [129][]int32
	for i := range peers {
		p := &peers[i]
		if p.Subnet6.IsValid() {
			byBits[p.Subnet6.Bits()] = append(byBits[p.Subnet6.Bits()], int32(i))
		}
		if _, dup := x.byPublic[p.public6]; p.PublicIPv6.IsValid() && !dup {
			x.byPublic[p.public6] = int32(i)
		}
	}
	for bits := 128; bits >= 0; bits-- {
		if len(byBits[bits]) > 0 {
			x.levels = append(x.levels, newLevel6(peers, uint8(bits), byBits[bits]))
		}
	}
	return x
}

// newLevel6 indexes the peers at idxs; when two share a subnet the first
// keeps it.
func newLevel6(peers []Peer, bits uint8, idxs []int32) level6 {
	l := level6{bits: bits}
	if bits <= 64 {
		lo, hi := ^uint64(0), uint64(0)
		for _, i := range idxs {
			h, _ := halves(peers[i].Subnet6.Addr().As16())
			k := denseKey(h, bits)
			lo, hi = min(lo, k), max(hi, k)
		}
		// hi-lo, not the slot count hi-lo+1, which overflows for a /64
		// level spanning every key.
		if span := hi - lo; span < maxDenseSlots && span < 8*uint64(len(idxs))+4096 {
			l.base, l.dense = lo, make([]int32, span+1)
			for _, i := range idxs {
				h, _ := halves(peers[i].Subnet6.Addr().As16())
				if k := denseKey(h, bits) - lo; l.dense[k] == 0 {
					l.dense[k] = i + 1
				}
			}
			return l
		}
	}
	l.sparse = make(map[[2]uint64]int32, len(idxs))
	for _, i := range idxs {
		h, lo := halves(peers[i].Subnet6.Addr().As16())
		if k := masked(h, lo, bits); l.sparse[k] == 0 {
			l.sparse[k] = i + 1
		}
	}
	return l
}
