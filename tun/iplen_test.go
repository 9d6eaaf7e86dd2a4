package tun

import "testing"

func TestDeclaredLen(t *testing.T) {
	v4 := []byte{0x45, 0, 0x05, 0xc0} // total length 1472
	v6 := []byte{0x60, 0, 0, 0, 0x00, 0x10}
	if n, ok := declaredLen(v4); !ok || n != 1472 {
		t.Errorf("IPv4: %d, %v; want 1472", n, ok)
	}
	if n, ok := declaredLen(v6); !ok || n != 56 {
		t.Errorf("IPv6: %d, %v; want 56", n, ok)
	}
	for _, bad := range [][]byte{nil, {0x45, 0}, {0x60, 0, 0}, {0x10, 0, 0, 0, 0, 0}} {
		if _, ok := declaredLen(bad); ok {
			t.Errorf("declaredLen(% x) accepted", bad)
		}
	}
	if !truncated(v4) || truncated([]byte{0x45, 0, 0, 4}) {
		t.Error("truncated misjudged a 4-byte IPv4 read")
	}
}

// FuzzDeclaredLen: any bytes give a length or false, never a panic, and a
// packet that holds what it declares is never called truncated.
func FuzzDeclaredLen(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 1, 2})
	f.Add([]byte{0x60, 0, 0, 0, 0, 0})
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		n, ok := declaredLen(pkt)
		if !ok {
			if truncated(pkt) {
				t.Fatal("non-IP input reported truncated")
			}
			return
		}
		if n < 0 || truncated(pkt) != (n > len(pkt)) {
			t.Fatalf("declaredLen = %d, truncated = %v for %d bytes", n, truncated(pkt), len(pkt))
		}
	})
}
