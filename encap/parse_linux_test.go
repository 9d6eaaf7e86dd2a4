package encap

import (
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSockaddrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		v6      bool
		namelen uint32
	}{
		{"203.0.113.9:8285", false, unix.SizeofSockaddrInet4},
		{"[2001:db8:0:1::9]:8285", true, unix.SizeofSockaddrInet6},
	} {
		var sa sockaddr
		want := netip.MustParseAddrPort(tc.addr)
		if n := putSockaddr(&sa, want, tc.v6); n != tc.namelen {
			t.Fatalf("%v: namelen %d, want %d", want, n, tc.namelen)
		}
		got, err := parseSockaddr(sockaddrBytes(&sa, tc.namelen))
		if err != nil || got != want {
			t.Fatalf("parseSockaddr = %v, %v; want %v", got, err, want)
		}
		if _, err := parseSockaddr(sockaddrBytes(&sa, tc.namelen-8)); err == nil {
			t.Fatalf("%v: a sockaddr cut by 8 bytes parsed", want)
		}
	}
}

// FuzzParseSockaddr: any bytes give an address or an error, never a panic,
// and an accepted address re-encodes to the same bytes.
func FuzzParseSockaddr(f *testing.F) {
	f.Add([]byte{2, 0, 0x20, 0x5d, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{10, 0, 0x20, 0x5d, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2, 0})
	f.Add([]byte{10, 0, 0x20, 0x5d, 0, 0, 0, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, err := parseSockaddr(b)
		if err != nil {
			return
		}
		v6 := ap.Addr().Is6()
		var sa sockaddr
		n := putSockaddr(&sa, ap, v6)
		// Compared: family, port and address (not flow info or scope).
		enc := unsafe.Slice((*byte)(unsafe.Pointer(&sa)), n)
		if string(enc[:4]) != string(b[:4]) || v6 && string(enc[8:24]) != string(b[8:24]) || !v6 && string(enc[4:8]) != string(b[4:8]) {
			t.Fatalf("% x parsed as %v, re-encoded as % x", b[:n], ap, enc)
		}
	})
}

func TestGroupEnd(t *testing.T) {
	a, b := netip.MustParseAddrPort("192.0.2.1:8285"), netip.MustParseAddrPort("192.0.2.2:8285")
	msg := func(n int, to netip.AddrPort) Message { return Message{Buf: make([]byte, n), N: n, Addr: to} }
	cases := []struct {
		name string
		msgs []Message
		want int
	}{
		{"equal run", []Message{msg(100, a), msg(100, a), msg(100, a)}, 3},
		{"shorter last ends run", []Message{msg(100, a), msg(50, a), msg(50, a)}, 2},
		{"longer breaks run", []Message{msg(100, a), msg(200, a)}, 1},
		{"other destination breaks run", []Message{msg(100, a), msg(100, b)}, 1},
		{"empty message alone", []Message{msg(0, a), msg(0, a)}, 1},
		{"byte limit", []Message{msg(40000, a), msg(40000, a)}, 1},
		{"heads count in the size", []Message{msg(100, a), {Head: make([]byte, 40), Buf: make([]byte, 60), N: 60, Addr: a}, msg(100, a)}, 3},
		{"a longer head breaks the run", []Message{msg(100, a), {Head: make([]byte, 41), Buf: make([]byte, 60), N: 60, Addr: a}}, 1},
	}
	for _, c := range cases {
		if got := groupEnd(c.msgs, 0); got != c.want {
			t.Errorf("%s: groupEnd = %d, want %d", c.name, got, c.want)
		}
	}
	run := make([]Message, 100)
	for i := range run {
		run[i] = msg(10, a)
	}
	if got := groupEnd(run, 0); got != maxGSOSegments {
		t.Errorf("100 equal messages: groupEnd = %d, want the %d-segment limit", got, maxGSOSegments)
	}
}

// FuzzGroupEnd decodes a batch description (size, destination and head
// length per message) and checks every GSO run obeys the kernel's rules:
// one destination, equal sizes (heads counted) with only the last
// shorter, within the segment and byte limits.
func FuzzGroupEnd(f *testing.F) {
	f.Add([]byte{100, 0, 100, 0, 50, 0, 50, 1})
	f.Add([]byte{0, 0, 255, 1, 255, 1, 255, 1})
	f.Fuzz(func(t *testing.T, desc []byte) {
		dsts := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:8285"), netip.MustParseAddrPort("192.0.2.2:8285")}
		var msgs []Message
		for i := 0; i+1 < len(desc); i += 2 {
			n := int(desc[i]) * 200 // up to 51000 bytes, to reach the byte limit
			m := Message{Buf: make([]byte, n), N: n, Addr: dsts[desc[i+1]&1]}
			if head := int(desc[i+1] >> 1); head > 0 {
				m.Head = make([]byte, head)
			}
			msgs = append(msgs, m)
		}
		for i := 0; i < len(msgs); {
			end := groupEnd(msgs, i)
			if end <= i || end > len(msgs) || end-i > maxGSOSegments {
				t.Fatalf("groupEnd(%d) = %d of %d", i, end, len(msgs))
			}
			total := 0
			for j := i; j < end; j++ {
				total += msgs[j].Len()
				if msgs[j].Addr != msgs[i].Addr || msgs[j].Len() > msgs[i].Len() || (j < end-1 && msgs[j].Len() != msgs[i].Len()) {
					t.Fatalf("run [%d,%d) mixes sizes or destinations at %d", i, end, j)
				}
			}
			if end-i > 1 && (total > maxGSOBytes || msgs[i].Len() == 0) {
				t.Fatalf("run [%d,%d) of %d bytes breaks the GSO limits", i, end, total)
			}
			i = end
		}
	})
}
