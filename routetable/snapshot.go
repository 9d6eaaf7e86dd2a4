package routetable

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// Snapshot is an immutable view of the table. Its methods are safe for
// concurrent use and allocate nothing. The *Peer they return points into
// the snapshot: read it, never modify it.
type Snapshot struct {
	peers    []Peer  // sorted by ID: IPv4 subnets, then IPv6-only peers
	levels   []level // IPv4 subnets: one per distinct prefix length, longest first
	byPublic map[uint32]int32
	v6       index6 // IPv6 subnets and public addresses (snapshot6.go)
}

// level indexes the peers whose subnets have one prefix length. The key of
// an address is its top bits (addr >> shift). Peer subnets usually share
// one length and sit in one Network, so their keys are close together and
// a dense array indexed by key-base answers in a few nanoseconds; scattered
// keys fall back to a map.
type level struct {
	shift  uint8  // 32 - prefix length; 32 makes every key 0 (a /0)
	base   uint32 // smallest key, when dense
	dense  []int32
	sparse map[uint32]int32
}

// Entries hold peer index + 1, so 0 means empty in the dense array.

// maxDenseSlots bounds a dense level's memory (4 bytes a slot): a /8
// Network cut into /24 subnets (65,536 slots) is still dense.
const maxDenseSlots = 1 << 17

func key(a uint32, shift uint8) uint32 { return uint32(uint64(a) >> shift) }

func (l *level) find(a uint32) int32 {
	k := key(a, l.shift)
	if l.sparse != nil {
		return l.sparse[k]
	}
	if i := k - l.base; i < uint32(len(l.dense)) {
		return l.dense[i]
	}
	return 0
}

// Lookup returns the peer whose subnet is the longest prefix containing
// dst.
func (s *Snapshot) Lookup(dst [4]byte) (*Peer, bool) {
	a := binary.BigEndian.Uint32(dst[:])
	for i := range s.levels {
		if idx := s.levels[i].find(a); idx != 0 {
			return &s.peers[idx-1], true
		}
	}
	return nil, false
}

// IsPeer returns the peer whose public IP is src, for the outside
// direction's check of who sent a datagram. If several leases name the
// same public IP, it returns the one with the lowest subnet.
func (s *Snapshot) IsPeer(src [4]byte) (*Peer, bool) {
	idx, ok := s.byPublic[binary.BigEndian.Uint32(src[:])]
	if !ok {
		return nil, false
	}
	return &s.peers[idx], true
}

// Len returns the number of peers.
func (s *Snapshot) Len() int { return len(s.peers) }

// Peers returns a copy of the peers, sorted by ID.
func (s *Snapshot) Peers() []Peer { return slices.Clone(s.peers) }

// build makes a snapshot that owns peers: validated, masked, one per
// subnet. It sorts peers in place (mostly sorted input is near linear).
func build(peers []Peer) *Snapshot {
	s := &Snapshot{peers: peers, byPublic: make(map[uint32]int32, len(peers))}
	slices.SortFunc(s.peers, func(a, b Peer) int { return comparePrefix(a.ID(), b.ID()) })
	var byBits [33][]int32
	for i := range s.peers {
		p := &s.peers[i]
		if p.Subnet.IsValid() {
			byBits[p.Subnet.Bits()] = append(byBits[p.Subnet.Bits()], int32(i))
		}
		if !p.PublicIP.IsValid() {
			continue
		}
		pub := binary.BigEndian.Uint32(p.public4[:])
		if _, dup := s.byPublic[pub]; !dup {
			s.byPublic[pub] = int32(i)
		}
	}
	s.v6 = buildIndex6(s.peers)
	for bits := 32; bits >= 0; bits-- {
		if len(byBits[bits]) > 0 {
			s.levels = append(s.levels, s.newLevel(uint8(32-bits), byBits[bits]))
		}
	}
	return s
}

// newLevel indexes the peers at idxs, which are in ascending address
// order, so their keys are too.
func (s *Snapshot) newLevel(shift uint8, idxs []int32) level {
	keyOf := func(i int32) uint32 {
		b := s.peers[i].Subnet.Addr().As4()
		return key(binary.BigEndian.Uint32(b[:]), shift)
	}
	l := level{shift: shift}
	lo, hi := keyOf(idxs[0]), keyOf(idxs[len(idxs)-1])
	span := uint64(hi) - uint64(lo) + 1
	if span <= maxDenseSlots && span <= 8*uint64(len(idxs))+4096 {
		l.base = lo
		l.dense = make([]int32, span)
		for _, i := range idxs {
			l.dense[keyOf(i)-lo] = i + 1
		}
		return l
	}
	l.sparse = make(map[uint32]int32, len(idxs))
	for _, i := range idxs {
		l.sparse[keyOf(i)] = i + 1
	}
	return l
}

// IsPeerAddr is IsPeer or IsPeer6 by src's family.
func (s *Snapshot) IsPeerAddr(src netip.Addr) (*Peer, bool) {
	if src.Is4() || src.Is4In6() {
		return s.IsPeer(src.As4())
	}
	return s.IsPeer6(src.As16())
}
