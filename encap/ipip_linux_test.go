package encap

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// ipipPair opens IPIP sockets on 192.0.2.1 and 192.0.2.2, on lo of a
// fresh namespace.
func ipipPair(tb testing.TB) (ns testbed.NS, a, b *Conn) {
	tb.Helper()
	n := pairNS(tb)
	a = listenIn(tb, n, Config{Encap: IPIP, Addr: netip.AddrPortFrom(hostA.Addr(), 0)})
	b = listenIn(tb, n, Config{Encap: IPIP, Addr: netip.AddrPortFrom(hostB.Addr(), 0)})
	return n, a, b
}

// innerIPv4 is an IPv4 packet of size bytes from a pod, with the given TOS,
// TTL and DF; the payload bytes are seq+i.
func innerIPv4(seq, size int, tos, ttl byte, df bool) []byte {
	p := payload(seq, size)
	copy(p, []byte{0x45, tos, byte(size >> 8), byte(size), 0, 0, 0, 0, ttl, unix.IPPROTO_UDP, 0, 0,
		198, 18, 1, 2, 198, 18, 2, 3})
	if df {
		p[6] = 0x40
	}
	return p
}

func ipipMessages(dst netip.Addr, pkts ...[]byte) []Message {
	msgs := make([]Message, len(pkts))
	for i, p := range pkts {
		msgs[i] = Message{Buf: p, N: len(p), Addr: netip.AddrPortFrom(dst, 0)}
	}
	return msgs
}

// TestIPIPRoundTrip sends whole packets and Head+Buf segments over IPIP:
// the receiver gets each inner packet exactly, after the outer header
// (Off), from the sender's address.
func TestIPIPRoundTrip(t *testing.T) {
	_, a, b := ipipPair(t)
	if a.LocalAddr() != netip.AddrPortFrom(hostA.Addr(), 0) {
		t.Fatalf("LocalAddr %v", a.LocalAddr())
	}
	if gso, gro := a.Offloads(); gso || gro {
		t.Fatalf("an IPIP socket reports offloads gso=%v gro=%v", gso, gro)
	}
	var pkts [][]byte
	for i, size := range []int{1480, 60, 1480, 700} {
		pkts = append(pkts, innerIPv4(i, size, 0, 63, true))
	}
	sent := ipipMessages(hostB.Addr(), pkts...)
	withHeads(sent[2:], 40)
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := readAll(t, b, len(sent), 2048)
	for i, m := range got {
		d, _ := m.Datagram(0)
		if m.Addr != netip.AddrPortFrom(hostA.Addr(), 0) || m.Off != OuterHeaderLen || !bytes.Equal(d, pkts[i]) {
			t.Errorf("packet %d: from %v, Off %d, %d bytes; want %v, %d, the %d bytes sent", i, m.Addr, m.Off, len(d), hostA.Addr(), OuterHeaderLen, len(pkts[i]))
		}
	}
}

// TestIPIPOuterHeaderIsTheKernelDevicesHeader reads the packets an IPIP
// socket sends with a raw socket of its own and checks every byte of the
// outer header against what the kernel's ipip device as flanneld creates
// it (flannel.ipip: ttl inherit, nopmtudisc, tos 0) writes for the same
// inner packet: protocol 4, TTL and DF copied from the inner header, the
// inner ECN field (CE as ECT(0)), DSCP 0, no options, a valid checksum,
// the bound source; then the inner packet and nothing else.
func TestIPIPOuterHeaderIsTheKernelDevicesHeader(t *testing.T) {
	ns, a, _ := ipipPair(t)
	var fd int
	var err error
	ns.In(t, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_IPIP) })
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	for _, tc := range []struct {
		name          string
		tos, ttl      byte
		df            bool
		wantTOS       byte
		wantFragField uint16
	}{
		{"DF, not ECN-capable", 0xb8, 63, true, 0, 0x4000}, // DSCP EF is not copied
		{"no DF, ECT(1)", 0x01, 5, false, 1, 0},
		{"DF, CE", 0x03, 200, true, 2, 0x4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := innerIPv4(1, 300, tc.tos, tc.ttl, tc.df)
			if n, err := a.WriteBatch(ipipMessages(hostB.Addr(), inner)); n != 1 || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			buf := make([]byte, 2048)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("raw read: %v", err)
			}
			pkt := buf[:n]
			if n != OuterHeaderLen+len(inner) || !bytes.Equal(pkt[OuterHeaderLen:], inner) {
				t.Fatalf("%d bytes on the wire, want %d: the outer header and the inner packet only", n, OuterHeaderLen+len(inner))
			}
			h := pkt[:OuterHeaderLen]
			if h[0] != 0x45 || h[1] != tc.wantTOS || int(binary.BigEndian.Uint16(h[2:])) != n || h[8] != tc.ttl || h[9] != 4 {
				t.Errorf("outer header % x: want version/IHL 45, TOS %#x, length %d, TTL %d, protocol 4", h, tc.wantTOS, n, tc.ttl)
			}
			if frag := binary.BigEndian.Uint16(h[6:]); frag != tc.wantFragField {
				t.Errorf("flags/fragment %#04x, want %#04x", frag, tc.wantFragField)
			}
			if tc.df && binary.BigEndian.Uint16(h[4:]) != 0 {
				t.Errorf("identification %#x, want 0 for an atomic datagram", binary.BigEndian.Uint16(h[4:]))
			}
			if src, dst := netip.AddrFrom4([4]byte(h[12:16])), netip.AddrFrom4([4]byte(h[16:20])); src != hostA.Addr() || dst != hostB.Addr() {
				t.Errorf("outer %v > %v, want %v > %v", src, dst, hostA.Addr(), hostB.Addr())
			}
			if sum := ipChecksum(h); sum != 0 {
				t.Errorf("outer header checksum does not verify (sum %#x)", sum)
			}
		})
	}
}

// ipChecksum is the ones'-complement sum over a header: 0 when its
// checksum field is right.
func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// TestIPIPPeerWithoutReceiver sends to an address where nothing receives
// protocol 4: the kernel there answers protocol unreachable, which an
// unconnected raw socket without IP_RECVERR does not report (raw_err), so
// the socket's next calls neither fail nor lose a packet. A socket that
// did report it would fail a call after each such answer.
func TestIPIPPeerWithoutReceiver(t *testing.T) {
	ns, a, b := ipipPair(t)
	nowhere := netip.MustParseAddr("192.0.2.3")
	ns.IP(t, "addr", "add", nowhere.String()+"/32", "dev", "lo")
	for seq := range 20 {
		if n, err := a.WriteBatch(ipipMessages(nowhere, innerIPv4(seq, 100, 0, 64, true))); n != 1 || err != nil {
			t.Fatalf("WriteBatch to %v = %d, %v", nowhere, n, err)
		}
		sent := ipipMessages(hostB.Addr(), innerIPv4(seq, 200, 0, 64, true))
		if n, err := a.WriteBatch(sent); n != 1 || err != nil {
			t.Fatalf("WriteBatch after an ICMP error = %d, %v", n, err)
		}
		if got := readAll(t, b, 1, 2048); got[0].N != OuterHeaderLen+200 {
			t.Fatalf("received %d bytes, want %d", got[0].N, OuterHeaderLen+200)
		}
	}
}

func TestIPIPRefusesWhatItCannotCarry(t *testing.T) {
	if _, err := Listen(Config{Encap: IPIP, Addr: netip.MustParseAddrPort("[2001:db8::1]:0")}); err == nil {
		t.Error("an IPv6 IPIP socket was opened")
	}
	if _, err := Listen(Config{Encap: IPIP, Addr: netip.MustParseAddrPort("192.0.2.1:0"), ReusePort: true}); err == nil {
		t.Error("an IPIP socket with SO_REUSEPORT was opened")
	}
	_, a, _ := ipipPair(t)
	v6 := make([]byte, 60)
	v6[0] = 0x60
	if n, err := a.WriteBatch(ipipMessages(hostB.Addr(), innerIPv4(0, 100, 0, 64, true), v6)); n != 1 || err == nil {
		t.Errorf("WriteBatch of an IPv6 inner packet = %d, %v; want 1 and an error", n, err)
	}
}

func TestIPIPBatchesDoNotAllocate(t *testing.T) {
	_, a, b := ipipPair(t)
	var pkts [][]byte
	for i := range 12 {
		pkts = append(pkts, innerIPv4(i, 1400, 0, 64, true))
	}
	sent := ipipMessages(hostB.Addr(), pkts...)
	withHeads(sent[8:], 40)
	batchesAllocateNothing(t, a, b, sent)
}
