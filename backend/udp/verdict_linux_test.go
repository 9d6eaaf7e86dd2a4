package udp

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/routetable"
)

// TestInsideVerdicts checks what the inside half does with each kind of
// pod packet: where it goes, what is dropped and counted, and which ICMP
// error the pod gets back (decoded as a pod's kernel would).
func TestInsideVerdicts(t *testing.T) {
	r := newRig(t, false)
	withTTL := func(p []byte, ttl uint8) []byte {
		p[8] = ttl
		p[10], p[11] = 0, 0
		c := packet.Checksum(p[:20], 0)
		p[10], p[11] = byte(c>>8), byte(c)
		return p
	}
	withDF := func(p []byte) []byte {
		p[6] |= 0x40
		return withTTL(p, p[8])
	}
	icmpErr := innerICMPUnreachable(t)
	cases := []struct {
		name     string
		pkt      []byte
		reason   drop.Reason // counted when forward is false
		forward  bool
		icmpType uint8 // 0: no ICMP answer
		icmpCode uint8
		icmpSrc  string
		mtu      uint16
	}{
		{name: "to a peer", pkt: innerPacket(t, "198.18.1.7", "198.18.2.5", 100), forward: true},
		{name: "no route", pkt: innerPacket(t, "198.18.1.7", "198.18.9.9", 100), reason: drop.NoRoute,
			icmpType: 3, icmpCode: 0, icmpSrc: "198.18.9.9"},
		{name: "too big with DF", pkt: withDF(innerPacket(t, "198.18.1.7", "198.18.2.5", 1500)), reason: drop.TooBig,
			icmpType: 3, icmpCode: 4, icmpSrc: "198.18.2.0", mtu: 1472},
		{name: "too big without DF", pkt: innerPacket(t, "198.18.1.7", "198.18.2.5", 1500), reason: drop.TooBig},
		{name: "TTL 1", pkt: withTTL(innerPacket(t, "198.18.1.7", "198.18.2.5", 100), 1), reason: drop.TTLExpired,
			icmpType: 11, icmpCode: 0, icmpSrc: "198.18.2.0"},
		{name: "bad header checksum", pkt: func() []byte { p := innerPacket(t, "198.18.1.7", "198.18.2.5", 100); p[10]++; return p }(),
			reason: drop.Malformed},
		{name: "IPv6", pkt: append([]byte{0x60}, make([]byte, 59)...), reason: drop.NotIPv4},
		{name: "an ICMP error is never answered", pkt: icmpErr, reason: drop.NoRoute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r.b.drops.Get(drop.Inside, tc.reason)
			r.w.in.nicmp = 0
			r.w.in.limit = icmpLimiter{}
			orig := append([]byte(nil), tc.pkt...)
			peer, ok := r.w.in.route(tc.pkt, len(tc.pkt), r.b.routes.Snapshot())
			if ok != tc.forward {
				t.Fatalf("forwarded = %v, want %v", ok, tc.forward)
			}
			if ok {
				if peer.AddrPort() != netip.MustParseAddrPort("192.0.2.2:8285") {
					t.Errorf("peer %v, want 192.0.2.2:8285", peer.AddrPort())
				}
				ip := decodeIPv4(t, tc.pkt)
				if ip.TTL != orig[8]-1 {
					t.Errorf("TTL %d, want %d (decremented as flanneld does)", ip.TTL, orig[8]-1)
				}
				return
			}
			if got := r.b.drops.Get(drop.Inside, tc.reason) - before; got != 1 {
				t.Errorf("%s drops grew by %d, want 1", tc.reason, got)
			}
			checkICMPAnswer(t, r.w, orig, tc.icmpType, tc.icmpCode, tc.icmpSrc, tc.mtu)
		})
	}
}

func checkICMPAnswer(t *testing.T, w *worker, orig []byte, typ, code uint8, src string, mtu uint16) {
	t.Helper()
	if queuedAnswer(t, w, typ != 0) == nil {
		return
	}
	p := gopacket.NewPacket(w.in.icmp[0][headroom:], layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil {
		t.Fatalf("the answer does not decode as IPv4/ICMP: %v", p)
	}
	if got := icmp.TypeCode; got.Type() != typ || got.Code() != code {
		t.Errorf("ICMP %v, want type %d code %d", got, typ, code)
	}
	if ip.SrcIP.String() != src || ip.DstIP.String() != netip.AddrFrom4([4]byte(orig[12:16])).String() {
		t.Errorf("ICMP %v -> %v, want %s -> the sender", ip.SrcIP, ip.DstIP, src)
	}
	if mtu != 0 && icmp.Seq != mtu {
		t.Errorf("next-hop MTU %d, want %d", icmp.Seq, mtu)
	}
}

// TestOutsideVerdicts checks the inner-packet checks of the outside half.
func TestOutsideVerdicts(t *testing.T) {
	r := newRig(t, false)
	from := &encap.Message{Addr: netip.MustParseAddrPort("192.0.2.2:8285")}
	ttl1 := innerPacket(t, "198.18.2.5", "198.18.1.7", 100)
	ttl1[8] = 1
	ttl1[10], ttl1[11] = 0, 0
	c := packet.Checksum(ttl1[:20], 0)
	ttl1[10], ttl1[11] = byte(c>>8), byte(c)
	padded := append(innerPacket(t, "198.18.2.5", "198.18.1.7", 100), 0xde, 0xad)
	cases := []struct {
		name   string
		pkt    []byte
		size   int
		reason drop.Reason
	}{
		{name: "for our subnet, padding cut", pkt: padded, size: 100},
		{name: "for another subnet", pkt: innerPacket(t, "198.18.2.5", "198.18.3.7", 100), reason: drop.NotOurSubnet},
		{name: "TTL 1", pkt: ttl1, reason: drop.TTLExpired},
		{name: "not IPv4", pkt: []byte{1, 2, 3}, reason: drop.Malformed},
		{name: "from the peer's flannel address", pkt: innerPacket(t, "198.18.2.0", "198.18.1.7", 100), size: 100},
		{name: "source in our own subnet", pkt: innerPacket(t, "198.18.1.9", "198.18.1.7", 100), reason: drop.SpoofedSource},
		{name: "source in an unleased subnet", pkt: innerPacket(t, "198.18.230.9", "198.18.1.7", 100), reason: drop.SpoofedSource},
		{name: "source outside the overlay", pkt: innerPacket(t, "203.0.113.77", "198.18.1.7", 100), reason: drop.SpoofedSource},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r.b.drops.Get(drop.Outside, tc.reason)
			size, ok := r.w.out.acceptInner(tc.pkt, from, r.w.out.routes.Snapshot())
			if ok != (tc.size > 0) || size != tc.size {
				t.Fatalf("acceptInner = %d, %v; want %d", size, ok, tc.size)
			}
			if !ok {
				if got := r.b.drops.Get(drop.Outside, tc.reason) - before; got != 1 {
					t.Errorf("%s drops grew by %d, want 1", tc.reason, got)
				}
			}
		})
	}
}

// TestForeignSources: with ForeignSources a peer may send sources outside
// the Network (a gateway host), never overlay addresses not its own; and
// a second peer may not use the first one's subnet either way.
func TestForeignSources(t *testing.T) {
	for _, foreign := range []bool{false, true} {
		o := deviceless(t).out
		o.foreignSources = foreign
		if err := o.routes.Update([]routetable.Peer{{Subnet: netip.MustParsePrefix("198.18.3.0/24"),
			PublicIP: netip.MustParseAddr("192.0.2.3"), Port: DefaultPort}}, nil); err != nil {
			t.Fatal(err)
		}
		peer2 := &encap.Message{Addr: netip.MustParseAddrPort("192.0.2.2:8285")}
		for _, tc := range []struct {
			src  string
			want bool
		}{
			{"198.18.2.5", true},
			{"203.0.113.77", foreign},
			{"198.18.3.5", false}, // the other peer's subnet
			{"198.18.1.9", false}, // ours
			{"198.18.230.9", false},
		} {
			_, ok := o.acceptInner(innerPacket(t, tc.src, "198.18.1.7", 100), peer2, o.routes.Snapshot())
			if ok != tc.want {
				t.Errorf("foreign sources %v: source %s from 192.0.2.2 accepted %v, want %v", foreign, tc.src, ok, tc.want)
			}
		}
	}
}

func decodeIPv4(t *testing.T, b []byte) *layers.IPv4 {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		t.Fatalf("not IPv4: % x", b)
	}
	return ip
}

// innerICMPUnreachable is an ICMP error a pod sends to an unknown subnet.
func innerICMPUnreachable(t *testing.T) []byte {
	quoted := innerPacket(t, "198.18.9.9", "198.18.1.7", 60)
	out := make([]byte, 128)
	n, err := packet.DestUnreachable(out, quoted, [4]byte{198, 18, 1, 7}, packet.CodeNetUnreachable, 0)
	if err != nil {
		t.Fatal(err)
	}
	return out[:n]
}
