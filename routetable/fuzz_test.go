package routetable

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzLookup builds a table from the fuzz input in two batches (Replace,
// then Update with removals) and checks Lookup and IsPeer against a naive
// model: a map of the live peers searched linearly for the longest match.
//
// Input layout: 4 bytes dst, then 6-byte records: 4 bytes address, 1 byte
// prefix length (mod 33), 1 byte op (even: add, odd: remove) and public IP
// octet. Records in the first half go to Replace (all adds).
func FuzzLookup(f *testing.F) {
	f.Add([]byte{198, 18, 40, 7, 198, 18, 40, 0, 24, 2, 198, 18, 0, 0, 16, 4, 198, 18, 40, 0, 24, 1})
	f.Add([]byte{198, 18, 40, 200, 198, 18, 40, 128, 25, 0, 198, 18, 40, 200, 32, 2, 0, 0, 0, 0, 0, 6})
	f.Add([]byte{1, 2, 3, 4, 1, 0, 0, 0, 8, 0, 2, 0, 0, 0, 8, 2, 1, 2, 0, 0, 16, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		dst := [4]byte(data[:4])
		recs := data[4:]
		n := len(recs) / 6
		model := map[netip.Prefix]Peer{}
		var first []Peer
		var add []Peer
		var remove []netip.Prefix
		for i := 0; i < n; i++ {
			r := recs[i*6 : i*6+6]
			pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte(r[:4])), int(r[4])%33).Masked()
			p := Peer{Subnet: pfx, PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, r[5] | 1}), Port: 8285}
			switch {
			case i < n/2:
				first = append(first, p)
			case r[5]%2 == 0:
				add = append(add, p)
			default:
				remove = append(remove, pfx)
			}
		}
		for _, p := range first {
			model[p.Subnet] = p
		}
		for _, pfx := range remove {
			delete(model, pfx)
		}
		for _, p := range add {
			model[p.Subnet] = p
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

		for _, d := range [][4]byte{dst, bump(dst, 1), bump(dst, -1)} {
			var want *Peer
			for _, p := range model {
				if p.Subnet.Contains(netip.AddrFrom4(d)) && (want == nil || p.Subnet.Bits() > want.Subnet.Bits()) {
					p := p
					want = &p
				}
			}
			got, ok := s.Lookup(d)
			if ok != (want != nil) || (ok && (got.Subnet != want.Subnet || got.PublicIP != want.PublicIP)) {
				t.Fatalf("Lookup(%v) = %v %v, model %v", d, got, ok, want)
			}
		}
		for _, p := range model {
			got, ok := s.IsPeer(p.PublicIP.As4())
			if !ok || got.PublicIP != p.PublicIP {
				t.Fatalf("IsPeer(%v) = %v %v", p.PublicIP, got, ok)
			}
		}
		if _, ok := s.IsPeer([4]byte{192, 0, 2, 0}); ok { // the model's public IPs are odd
			t.Fatal("IsPeer matched an address no peer has")
		}
	})
}

func bump(a [4]byte, d int32) [4]byte {
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], uint32(int32(binary.BigEndian.Uint32(a[:]))+d))
	return out
}
