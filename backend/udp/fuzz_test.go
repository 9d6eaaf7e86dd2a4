package udp

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/routetable"
)

// deviceless is a backend with its own lease and one peer, and a worker
// without TUN or socket: enough for the per-packet decisions.
func deviceless(t testing.TB) *worker {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 1500},
		IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1")}
	b, err := New(ext, Options{Network: netip.MustParsePrefix("198.18.0.0/16"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	b.own = netip.MustParsePrefix("198.18.1.0/24")
	err = b.routes.Update([]routetable.Peer{{Subnet: netip.MustParsePrefix("198.18.2.0/24"),
		PublicIP: netip.MustParseAddr("192.0.2.2"), Port: DefaultPort}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return newWorker(b, nil, nil, nil)
}

// FuzzOutsideDatagram feeds arbitrary datagram payloads from a known
// dual-stack peer (198.18.2.0/24 and 2001:db8:100:2::/64, at 192.0.2.2 and
// 2001:db8:0:1::2) over either underlay to the outside checks, in both
// source modes: never a panic; whatever is accepted is a valid IPv4 or
// IPv6 packet for our own subnet of its family, no longer than what
// arrived, whose source is the sender's subnet (or, with ForeignSources,
// outside the network). A spoofed source is never accepted.
func FuzzOutsideDatagram(f *testing.F) {
	f.Add(innerPacket(f, "198.18.2.5", "198.18.1.7", 100), false, false)
	f.Add(innerPacket(f, "198.18.2.5", "198.18.3.7", 100), false, true)
	f.Add(innerPacket(f, "198.18.1.9", "198.18.1.7", 100), false, false)   // our own pod's address
	f.Add(innerPacket(f, "198.18.230.9", "198.18.1.7", 100), true, false)  // an unleased overlay address
	f.Add(innerPacket(f, "203.0.113.77", "198.18.1.7", 100), false, false) // outside the overlay
	f.Add(innerPacket(f, "203.0.113.77", "198.18.1.7", 100), true, true)
	f.Add(innerPacket(f, "2001:db8:100:2::5", "2001:db8:100:1::7", 100), false, true)
	f.Add(innerPacket(f, "2001:db8:100:2::5", "2001:db8:100:1::7", 100), false, false)
	f.Add(innerPacket(f, "2001:db8:100:3::5", "2001:db8:100:1::7", 100), false, true) // the other peer's
	f.Add(innerPacket(f, "2001:db8:ffff::5", "2001:db8:100:1::7", 100), true, true)   // outside the overlay
	f.Add([]byte{0x45, 0, 0, 20}, false, false)
	f.Add([]byte{0x60, 0, 0, 0, 0, 0}, false, true)
	f.Add([]byte{}, true, false)
	_, strict := dualStack(f)
	_, relaxed := dualStack(f)
	relaxed.out.foreignSources = true
	from4 := &encap.Message{Addr: netip.MustParseAddrPort("192.0.2.2:8285")}
	from6 := &encap.Message{Addr: netip.MustParseAddrPort("[2001:db8:0:1::2]:8285")}
	peerSubnet, network := netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("198.18.0.0/16")
	peerSubnet6 := netip.MustParsePrefix("2001:db8:100:2::/64")
	f.Fuzz(func(t *testing.T, pkt []byte, foreign, over6 bool) {
		w, m := strict, from4
		if foreign {
			w = relaxed
		}
		if over6 {
			m = from6
		}
		size, ok := w.out.acceptInner(pkt, m, w.out.routes.Snapshot())
		if !ok {
			return
		}
		if size > len(pkt) {
			t.Fatalf("accepted %d bytes of a %d-byte datagram", size, len(pkt))
		}
		var src netip.Addr
		own, peer, whole := w.out.fams[ipv4].own, peerSubnet, network
		if isIPv6(pkt) {
			ip, err := packet.ParseIPv6(pkt[:size])
			if err != nil || ip.Len() != size {
				t.Fatalf("accepted a bad IPv6 packet: %v % x", err, pkt[:size])
			}
			src, own, peer, whole = ip.SrcAddr(), w.out.fams[ipv6].own, peerSubnet6, network6
			if !own.Contains(ip.DstAddr()) {
				t.Fatalf("accepted an IPv6 packet for %v", ip.DstAddr())
			}
		} else {
			ip, err := packet.ParseIPv4(pkt[:size])
			if err != nil || !own.Contains(ip.DstAddr()) {
				t.Fatalf("accepted a packet that is not IPv4 for our subnet: %v % x", err, pkt[:size])
			}
			src = ip.SrcAddr()
		}
		if !peer.Contains(src) && (!foreign || whole.Contains(src)) {
			t.Fatalf("accepted a spoofed source %v from the peer of %v (foreign sources %v)", src, peer, foreign)
		}
	})
}

// FuzzInsidePacket feeds arbitrary TUN packets to the inside decisions of
// a dual-stack host: never a panic, a forwarded packet goes to the peer
// whose subnet of its family holds its destination, and every ICMP answer
// is a valid IPv4 or IPv6 packet.
func FuzzInsidePacket(f *testing.F) {
	f.Add(innerPacket(f, "198.18.1.7", "198.18.2.5", 100))
	f.Add(innerPacket(f, "198.18.1.7", "198.18.9.9", 100))
	f.Add(innerPacket(f, "2001:db8:100:1::7", "2001:db8:100:2::5", 100))
	f.Add(innerPacket(f, "2001:db8:100:1::7", "2001:db8:100:9::9", 100))
	f.Add([]byte{0x60, 0, 0, 0})
	_, w := dualStack(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		w.in.nicmp = 0
		peer, ok := w.in.route(pkt, len(pkt), w.in.routes.Snapshot())
		switch {
		case ok && isIPv6(pkt):
			ip, err := packet.ParseIPv6(pkt)
			if err != nil || !peer.Subnet6.Contains(ip.DstAddr()) {
				t.Fatalf("forwarded %v to peer %v", err, peer.Subnet6)
			}
		case ok:
			ip, err := packet.ParseIPv4(pkt)
			if err != nil || !peer.Subnet.Contains(ip.DstAddr()) {
				t.Fatalf("forwarded %v to peer %v", err, peer.Subnet)
			}
		}
		for _, b := range w.in.icmp[:w.in.nicmp] {
			if _, err := packet.ParseIPv4(b[headroom:]); err != nil && !isIPv6(b[headroom:]) {
				t.Fatalf("ICMP answer does not parse: %v", err)
			}
			if _, err := packet.ParseIPv6(b[headroom:]); err != nil && isIPv6(b[headroom:]) {
				t.Fatalf("ICMPv6 answer does not parse: %v", err)
			}
		}
	})
}
