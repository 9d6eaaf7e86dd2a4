package subnet

import (
	"math/bits"
	"net/netip"
)

// u128 is an address as a 128-bit integer, so IPv4 and IPv6 subnet
// arithmetic (n-th subnet, distance between two subnets) is one code path.
// An IPv4 address uses only the low 32 bits.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var v u128
	for i := range 8 {
		v.hi = v.hi<<8 | uint64(b[i])
		v.lo = v.lo<<8 | uint64(b[8+i])
	}
	return v
}

// addr converts back; is4 selects the family.
func (v u128) addr(is4 bool) netip.Addr {
	if is4 {
		x := uint32(v.lo)
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	var b [16]byte
	for i := range 8 {
		b[7-i] = byte(v.hi >> (8 * i))
		b[15-i] = byte(v.lo >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

func (v u128) add(w u128) u128 {
	lo, c := bits.Add64(v.lo, w.lo, 0)
	hi, _ := bits.Add64(v.hi, w.hi, c)
	return u128{hi, lo}
}

func (v u128) sub(w u128) u128 {
	lo, b := bits.Sub64(v.lo, w.lo, 0)
	hi, _ := bits.Sub64(v.hi, w.hi, b)
	return u128{hi, lo}
}

func (v u128) less(w u128) bool { return v.hi < w.hi || (v.hi == w.hi && v.lo < w.lo) }

func (v u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return v
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{hi: v.lo << (n - 64)}
	}
	return u128{hi: v.hi<<n | v.lo>>(64-n), lo: v.lo << n}
}

func (v u128) shr(n uint) u128 {
	switch {
	case n == 0:
		return v
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{lo: v.hi >> (n - 64)}
	}
	return u128{hi: v.hi >> n, lo: v.lo>>n | v.hi<<(64-n)}
}

// firstHost is the subnet's network address + 1: the address flannel puts
// in FLANNEL_SUBNET and on the bridge.
func firstHost(p netip.Prefix) netip.Addr {
	return toU128(p.Masked().Addr()).add(u128{lo: 1}).addr(p.Addr().Is4())
}
