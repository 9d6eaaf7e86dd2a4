package packet

import "testing"

func TestDeclaredLen(t *testing.T) {
	v4 := []byte{0x45, 0, 0x05, 0xc0} // total length 1472
	v6 := []byte{0x60, 0, 0, 0, 0x00, 0x10}
	if n, ok := DeclaredLen(v4); !ok || n != 1472 {
		t.Errorf("IPv4: %d, %v; want 1472", n, ok)
	}
	if n, ok := DeclaredLen(v6); !ok || n != 56 {
		t.Errorf("IPv6: %d, %v; want 56", n, ok)
	}
	for _, bad := range [][]byte{nil, {0x45, 0}, {0x60, 0, 0}, {0x10, 0, 0, 0, 0, 0}} {
		if _, ok := DeclaredLen(bad); ok {
			t.Errorf("DeclaredLen(% x) accepted", bad)
		}
	}
}

// FuzzDeclaredLen: any bytes give a length or false, never a panic; an
// IPv4 packet ParseIPv4 accepts declares its TotalLen.
func FuzzDeclaredLen(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 1, 2})
	f.Add([]byte{0x60, 0, 0, 0, 0, 0})
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := DeclaredLen(b)
		if ok != (len(b) >= 4 && b[0]>>4 == 4 || len(b) >= 6 && b[0]>>4 == 6) {
			t.Fatalf("DeclaredLen(% x) ok = %v", b, ok)
		}
		if n < 0 || n > IPv6HeaderLen+0xffff {
			t.Fatalf("DeclaredLen = %d", n)
		}
		if ip, err := ParseIPv4(b); err == nil && n != int(ip.TotalLen) {
			t.Fatalf("DeclaredLen = %d, ParseIPv4 total length %d", n, ip.TotalLen)
		}
	})
}
