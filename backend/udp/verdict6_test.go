package udp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/subnet"
)

var (
	network6 = netip.MustParsePrefix("2001:db8:100::/48")
	dualExt  = &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 1500},
		IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1"),
		IfaceV6Addr: netip.MustParseAddr("2001:db8:0:1::1"), ExtV6Addr: netip.MustParseAddr("2001:db8:0:1::1")}
)

// dualLease is a dual-stack peer lease of host i (198.18.i.0/24,
// 2001:db8:100:i::/64 at 192.0.2.i), with an IPv6 public address when v6.
func dualLease(i int, v6 bool) subnet.Lease {
	l := subnet.Lease{Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24),
		IPv6Subnet: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, byte(i)}), 64),
		Attrs:      subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}}
	if v6 {
		l.Attrs.PublicIPv6 = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 15: byte(i)})
	}
	return l
}

func added(ls ...subnet.Lease) []subnet.Event {
	evs := make([]subnet.Event, len(ls))
	for i, l := range ls {
		evs[i] = subnet.Event{Type: subnet.EventAdded, Lease: l}
	}
	return evs
}

// dualStack is a dual-stack backend on 192.0.2.1 and 2001:db8:0:1::1 with
// own lease 198.18.1.0/24 + 2001:db8:100:1::/64, a dual-stack peer 2 with
// an IPv6 underlay address and a peer 3 without one (as flanneld's udp
// leases), and a worker without TUN or sockets.
func dualStack(t testing.TB) (*Backend, *worker) {
	b, err := New(dualExt, Options{Network: netip.MustParsePrefix("198.18.0.0/16"), Network6: network6,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	own := dualLease(1, true)
	b.own, b.own6 = own.Subnet, own.IPv6Subnet
	b.HandleEvents(context.Background(), added(dualLease(2, true), dualLease(3, false)))
	if n := b.routes.Snapshot().Len(); n != 2 {
		t.Fatalf("%d peers in the table, want 2", n)
	}
	return b, newWorker(b, nil, nil, nil)
}

func TestNewOverlayMTUs(t *testing.T) {
	v6only := *dualExt
	v6only.IfaceAddr, v6only.ExtAddr = netip.Addr{}, netip.Addr{}
	cases := []struct {
		name      string
		ext       *backend.ExternalInterface
		opts      Options
		mtu, mtu6 int
		device    int
	}{
		{"dual stack", dualExt, Options{Network: netip.MustParsePrefix("198.18.0.0/16"), Network6: network6}, 1472, 1452, 1472},
		{"IPv6-only", &v6only, Options{Network6: network6}, 1452, 1452, 1452},
		{"IPv4-only", dualExt, Options{Network: netip.MustParsePrefix("198.18.0.0/16")}, 1472, 1472, 1472},
	}
	for _, tc := range cases {
		b, err := New(tc.ext, tc.opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if b.mtu != tc.mtu || b.mtu6 != tc.mtu6 || b.MTU() != tc.device {
			t.Errorf("%s: mtu %d, mtu6 %d, device %d; want %d, %d, %d", tc.name, b.mtu, b.mtu6, b.MTU(), tc.mtu, tc.mtu6, tc.device)
		}
	}
	small := *dualExt
	small.Iface = &net.Interface{Name: "eth0", MTU: 1320}
	if _, err := New(&small, Options{Network6: network6}); err == nil {
		t.Error("an MTU leaving 1272 bytes for IPv6 was accepted")
	}
	if _, err := New(dualExt, Options{Network6: netip.MustParsePrefix("198.18.0.0/16")}); err == nil {
		t.Error("an IPv4 IPv6Network was accepted")
	}
	if _, err := New(dualExt, Options{}); err == nil {
		t.Error("no network at all was accepted")
	}
}

// TestInside6Verdicts: what the inside half does with each kind of IPv6
// pod packet, and the ICMPv6 error the pod gets back.
func TestInside6Verdicts(t *testing.T) {
	b, w := dualStack(t)
	withHops := func(p []byte, h uint8) []byte { p[7] = h; return p }
	icmpErr := make([]byte, 200)
	n, err := packet.DestUnreachable6(icmpErr, innerPacket(t, "2001:db8:100:9::9", "2001:db8:100:1::7", 60), [16]byte(net.ParseIP("2001:db8:100:1::7")))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		pkt      []byte
		reason   drop.Reason
		to       string // forwarded to, over the underlay of its family
		icmpType uint8
		icmpSrc  string
		mtu      uint32
	}{
		{name: "to a peer with an IPv6 underlay", pkt: innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:2::5", 100), to: "[2001:db8:0:1::2]:8285"},
		// Peer 3's lease is like flanneld's udp one: no PublicIPv6, and
		// flanneld's proxy cannot carry IPv6, so its IPv6 subnet has no route.
		{name: "to a peer without an IPv6 public address", pkt: innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:3::5", 100), reason: drop.NoRoute,
			icmpType: 1, icmpSrc: "2001:db8:100:3::5"},
		{name: "IPv4 to that peer still goes", pkt: innerPacket(t, "198.18.1.7", "198.18.3.5", 100), to: "192.0.2.3:8285"},
		{name: "IPv4 to a dual-stack peer stays on IPv4", pkt: innerPacket(t, "198.18.1.7", "198.18.2.5", 100), to: "192.0.2.2:8285"},
		{name: "no route", pkt: innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:9::9", 100), reason: drop.NoRoute,
			icmpType: 1, icmpSrc: "2001:db8:100:9::9"},
		{name: "too big", pkt: innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:2::5", 1453), reason: drop.TooBig,
			icmpType: 2, icmpSrc: "2001:db8:100:2::", mtu: 1452},
		{name: "largest that fits", pkt: innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:2::5", 1452), to: "[2001:db8:0:1::2]:8285"},
		{name: "hop limit 1", pkt: withHops(innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:2::5", 100), 1), reason: drop.TTLExpired,
			icmpType: 3, icmpSrc: "2001:db8:100:2::"},
		{name: "cut short", pkt: innerPacket(t, "2001:db8:100:1::7", "2001:db8:100:2::5", 100)[:60], reason: drop.Malformed},
		{name: "an ICMPv6 error is never answered", pkt: icmpErr[:n], reason: drop.NoRoute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.drops.Get(drop.Inside, tc.reason)
			w.in.nicmp, w.in.nout, w.in.limit = 0, [2]int{}, icmpLimiter{}
			orig := append([]byte(nil), tc.pkt...)
			w.in.queue(tc.pkt, b.routes.Snapshot())
			var sent []encap.Message
			sent = append(sent, w.in.msgs[viaIPv4][:w.in.nout[viaIPv4]]...)
			sent = append(sent, w.in.msgs[viaIPv6][:w.in.nout[viaIPv6]]...)
			if tc.to != "" {
				if len(sent) != 1 || sent[0].Addr.String() != tc.to {
					t.Fatalf("sent %v, want one datagram to %s", sent, tc.to)
				}
				if isIPv6(orig) && tc.pkt[7] != orig[7]-1 {
					t.Errorf("hop limit %d, want %d", tc.pkt[7], orig[7]-1)
				}
				return
			}
			if len(sent) != 0 {
				t.Fatalf("forwarded %v", sent)
			}
			if got := b.drops.Get(drop.Inside, tc.reason) - before; got != 1 {
				t.Errorf("%s drops grew by %d, want 1", tc.reason, got)
			}
			checkICMPv6Answer(t, w, orig, tc.icmpType, tc.icmpSrc, tc.mtu)
		})
	}
}

func checkICMPv6Answer(t *testing.T, w *worker, orig []byte, typ uint8, src string, mtu uint32) {
	t.Helper()
	b := queuedAnswer(t, w, typ != 0)
	if b == nil {
		return
	}
	p := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ip == nil || icmp == nil {
		t.Fatalf("the answer does not decode as IPv6/ICMPv6: %v", p)
	}
	if got := icmp.TypeCode; got.Type() != typ || got.Code() != 0 {
		t.Errorf("ICMPv6 %v, want type %d code 0", got, typ)
	}
	if ip.SrcIP.String() != src || !ip.DstIP.Equal(net.IP(orig[8:24])) {
		t.Errorf("ICMPv6 %v -> %v, want %s -> the sender", ip.SrcIP, ip.DstIP, src)
	}
	if packet.Checksum(b[40:], packet.PseudoSum(58, b[8:24], b[24:40], len(b)-40)) != 0 {
		t.Error("ICMPv6 checksum does not verify")
	}
	if mtu != 0 && uint32(icmp.Payload[0])<<24|uint32(icmp.Payload[1])<<16|uint32(icmp.Payload[2])<<8|uint32(icmp.Payload[3]) != mtu {
		t.Errorf("packet too big MTU % x, want %d", icmp.Payload[:4], mtu)
	}
}

// TestOutside6Verdicts: the inner-packet checks for IPv6, from a peer over
// either underlay.
func TestOutside6Verdicts(t *testing.T) {
	b, w := dualStack(t)
	over6 := &encap.Message{Addr: netip.MustParseAddrPort("[2001:db8:0:1::2]:8285")}
	over4 := &encap.Message{Addr: netip.MustParseAddrPort("192.0.2.2:8285")}
	hops1 := innerPacket(t, "2001:db8:100:2::5", "2001:db8:100:1::7", 100)
	hops1[7] = 1
	padded := append(innerPacket(t, "2001:db8:100:2::5", "2001:db8:100:1::7", 100), 0xde, 0xad)
	cases := []struct {
		name   string
		m      *encap.Message
		pkt    []byte
		size   int
		reason drop.Reason
	}{
		{name: "over IPv6, padding cut", m: over6, pkt: padded, size: 100},
		{name: "over IPv4", m: over4, pkt: innerPacket(t, "2001:db8:100:2::5", "2001:db8:100:1::7", 100), size: 100},
		{name: "IPv4 inner over IPv6", m: over6, pkt: innerPacket(t, "198.18.2.5", "198.18.1.7", 100), size: 100},
		{name: "for another subnet", m: over6, pkt: innerPacket(t, "2001:db8:100:2::5", "2001:db8:100:3::7", 100), reason: drop.NotOurSubnet},
		{name: "hop limit 1", m: over6, pkt: hops1, reason: drop.TTLExpired},
		{name: "cut short", m: over6, pkt: padded[:50], reason: drop.Malformed},
		{name: "source of the other peer", m: over6, pkt: innerPacket(t, "2001:db8:100:3::5", "2001:db8:100:1::7", 100), reason: drop.SpoofedSource},
		{name: "source in our own subnet", m: over6, pkt: innerPacket(t, "2001:db8:100:1::9", "2001:db8:100:1::7", 100), reason: drop.SpoofedSource},
		{name: "source outside the network", m: over4, pkt: innerPacket(t, "2001:db8:ffff::1", "2001:db8:100:1::7", 100), reason: drop.SpoofedSource},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.drops.Get(drop.Outside, tc.reason)
			size, ok := w.out.acceptInner(tc.pkt, tc.m, b.routes.Snapshot())
			if ok != (tc.size > 0) || size != tc.size {
				t.Fatalf("acceptInner = %d, %v; want %d", size, ok, tc.size)
			}
			if !ok {
				if got := b.drops.Get(drop.Outside, tc.reason) - before; got != 1 {
					t.Errorf("%s drops grew by %d, want 1", tc.reason, got)
				}
			}
		})
	}
	w.out.foreignSources = true
	if _, ok := w.out.acceptInner(innerPacket(t, "2001:db8:ffff::1", "2001:db8:100:1::7", 100), over6, b.routes.Snapshot()); !ok {
		t.Error("ForeignSources: a source outside the IPv6 network was refused")
	}
	if _, ok := w.out.acceptInner(innerPacket(t, "2001:db8:100:3::5", "2001:db8:100:1::7", 100), over6, b.routes.Snapshot()); ok {
		t.Error("ForeignSources: the other peer's IPv6 subnet was accepted")
	}
}

// TestHandleEventsIPv6: dual-stack and IPv6-only leases become route-table
// entries and leave it again.
func TestHandleEventsIPv6(t *testing.T) {
	b, _ := dualStack(t)
	s := b.routes.Snapshot()
	if p, ok := s.Lookup6([16]byte(net.ParseIP("2001:db8:100:2::5"))); !ok || p.AddrPort6().String() != "[2001:db8:0:1::2]:8285" {
		t.Fatalf("peer 2 by IPv6: %+v %v", p, ok)
	}
	b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventRemoved, Lease: dualLease(2, true)}})
	if _, ok := b.routes.Snapshot().Lookup6([16]byte(net.ParseIP("2001:db8:100:2::5"))); ok {
		t.Fatal("removed peer still routed")
	}

	v6only := *dualExt
	v6only.IfaceAddr, v6only.ExtAddr = netip.Addr{}, netip.Addr{}
	b6, err := New(&v6only, Options{Network6: network6, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l := dualLease(4, true)
	l.Subnet, l.Attrs.PublicIP = netip.Prefix{}, netip.Addr{}
	b6.HandleEvents(context.Background(), added(l, subnet.Lease{IPv6Subnet: netip.MustParsePrefix("2001:db8:100:5::/64")}))
	if b6.routes.Snapshot().Len() != 1 {
		t.Fatalf("IPv6-only peers %v, want the one with a public address", b6.routes.Snapshot().Peers())
	}
	b6.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventRemoved, Lease: l}})
	if b6.routes.Snapshot().Len() != 0 {
		t.Fatal("IPv6-only peer not removed")
	}
	if attrs, _ := b6.Init(context.Background()); attrs.PublicIP.IsValid() || attrs.PublicIPv6 != v6only.ExtV6Addr {
		t.Fatalf("IPv6-only lease attributes %+v", attrs)
	}
}
