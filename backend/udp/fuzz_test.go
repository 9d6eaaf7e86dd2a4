package udp

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/packet"
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

// FuzzOutsideDatagram feeds arbitrary datagram payloads from a known peer
// (198.18.2.0/24 at 192.0.2.2) to the outside checks, in both source
// modes: never a panic; whatever is accepted is a valid IPv4 packet for
// our own subnet, no longer than what arrived, whose source is the
// sender's subnet (or, with ForeignSources, outside the Network). A
// spoofed source is never accepted.
func FuzzOutsideDatagram(f *testing.F) {
	f.Add(innerPacket(f, "198.18.2.5", "198.18.1.7", 100), false)
	f.Add(innerPacket(f, "198.18.2.5", "198.18.3.7", 100), false)
	f.Add(innerPacket(f, "198.18.1.9", "198.18.1.7", 100), false)   // our own pod's address
	f.Add(innerPacket(f, "198.18.230.9", "198.18.1.7", 100), true)  // an unleased overlay address
	f.Add(innerPacket(f, "203.0.113.77", "198.18.1.7", 100), false) // outside the overlay
	f.Add(innerPacket(f, "203.0.113.77", "198.18.1.7", 100), true)
	f.Add([]byte{0x45, 0, 0, 20}, false)
	f.Add([]byte{}, true)
	strict, relaxed := deviceless(f), deviceless(f)
	relaxed.out.foreignSources = true
	m := &encap.Message{Addr: netip.MustParseAddrPort("192.0.2.2:8285")}
	peerSubnet, network := netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("198.18.0.0/16")
	f.Fuzz(func(t *testing.T, pkt []byte, foreign bool) {
		w := strict
		if foreign {
			w = relaxed
		}
		size, ok := w.out.acceptInner(pkt, m, w.out.routes.Snapshot())
		if !ok {
			return
		}
		if size > len(pkt) {
			t.Fatalf("accepted %d bytes of a %d-byte datagram", size, len(pkt))
		}
		ip, err := packet.ParseIPv4(pkt[:size])
		if err != nil || !w.out.own.Contains(ip.DstAddr()) {
			t.Fatalf("accepted a packet that is not IPv4 for our subnet: %v % x", err, pkt[:size])
		}
		if src := ip.SrcAddr(); !peerSubnet.Contains(src) && (!foreign || network.Contains(src)) {
			t.Fatalf("accepted a spoofed source %v from the peer of %v (foreign sources %v)", src, peerSubnet, foreign)
		}
	})
}

// FuzzInsidePacket feeds arbitrary TUN packets to the inside decisions:
// never a panic, a forwarded packet goes to the peer whose subnet holds its
// destination, and every ICMP answer is a valid IPv4 packet.
func FuzzInsidePacket(f *testing.F) {
	f.Add(innerPacket(f, "198.18.1.7", "198.18.2.5", 100))
	f.Add(innerPacket(f, "198.18.1.7", "198.18.9.9", 100))
	f.Add([]byte{0x60, 0, 0, 0})
	w := deviceless(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		w.in.nicmp = 0
		peer, ok := w.in.routeOne(pkt, w.in.routes.Snapshot())
		if ok {
			ip, err := packet.ParseIPv4(pkt)
			if err != nil || !peer.Subnet.Contains(ip.DstAddr()) {
				t.Fatalf("forwarded %v to peer %v", err, peer.Subnet)
			}
		}
		for _, b := range w.in.icmp[:w.in.nicmp] {
			if _, err := packet.ParseIPv4(b[headroom:]); err != nil {
				t.Fatalf("ICMP answer does not parse: %v", err)
			}
		}
	})
}
