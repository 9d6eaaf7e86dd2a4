package routetable

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzLookup6 is FuzzLookup for IPv6 subnets: a table built in two
// batches, checked against a linear longest-match over a model.
//
// Input layout: 16 bytes dst, then 10-byte records: 8 bytes of the
// prefix's top half (the low half is dst's, so long prefixes can match),
// 1 byte prefix length (mod 129), 1 byte op (even: add, odd: remove) and
// public address. Records in the first half go to Replace.
func FuzzLookup6(f *testing.F) {
	f.Add(append(a16ToSlice("2001:db8:100:1::7"), 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x01, 64, 2, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 48, 4))
	f.Add(append(a16ToSlice("2001:db8:100:1::7"), 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x01, 128, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x01, 128, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 16 {
			return
		}
		dst := [16]byte(data[:16])
		recs := data[16:]
		n := len(recs) / 10
		model := map[netip.Prefix]Peer{}
		var first, add []Peer
		var remove []netip.Prefix
		for i := 0; i < n; i++ {
			r := recs[i*10 : i*10+10]
			a := dst
			copy(a[:8], r[:8])
			pfx := netip.PrefixFrom(netip.AddrFrom16(a), int(r[8])%129).Masked()
			p := Peer{Subnet6: pfx, PublicIPv6: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: r[9] | 1}), Port: 8285}
			switch {
			case i < n/2:
				first = append(first, p)
			case r[9]%2 == 0:
				add = append(add, p)
			default:
				remove = append(remove, pfx)
			}
		}
		for _, p := range first {
			model[p.Subnet6] = p
		}
		for _, pfx := range remove {
			delete(model, pfx)
		}
		for _, p := range add {
			model[p.Subnet6] = p
		}
		tb := New()
		if err := tb.Replace(first); err != nil {
			t.Fatal(err)
		}
		if err := tb.Update(add, remove); err != nil {
			t.Fatal(err)
		}
		s := tb.Snapshot()
		if s.Len() != len(model) {
			t.Fatalf("Len %d, model %d", s.Len(), len(model))
		}
		for _, d := range [][16]byte{dst, bump6(dst, 1), bump6(dst, -1)} {
			var want *Peer
			for _, p := range model {
				if p.Subnet6.Contains(netip.AddrFrom16(d)) && (want == nil || p.Subnet6.Bits() > want.Subnet6.Bits()) {
					want = &p
				}
			}
			got, ok := s.Lookup6(d)
			if ok != (want != nil) || (ok && (got.Subnet6 != want.Subnet6 || got.PublicIPv6 != want.PublicIPv6)) {
				t.Fatalf("Lookup6(%v) = %v %v, model %v", netip.AddrFrom16(d), got, ok, want)
			}
		}
		for _, p := range model {
			if got, ok := s.IsPeer6(p.PublicIPv6.As16()); !ok || got.PublicIPv6 != p.PublicIPv6 {
				t.Fatalf("IsPeer6(%v) = %v %v", p.PublicIPv6, got, ok)
			}
		}
	})
}

func a16ToSlice(s string) []byte { a := a16(s); return a[:] }

// bump6 adds d to the low half of a (wrapping within it).
func bump6(a [16]byte, d int64) [16]byte {
	binary.BigEndian.PutUint64(a[8:], uint64(int64(binary.BigEndian.Uint64(a[8:]))+d))
	return a
}
