package testbed

import (
	"net/netip"
	"strings"
	"testing"
)

func TestIPv6UnderlayAndPods(t *testing.T) {
	RequireRoot(t)
	for _, direct := range []bool{false, true} {
		b, err := New(Options{Name: map[bool]string{false: "v6s", true: "v6d"}[direct], Hosts: 2, Direct: direct, IPv6: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		h1, h2 := b.Hosts[0], b.Hosts[1]
		if h1.Addr6 != netip.MustParseAddr("2001:db8:0:1::1") || h2.Addr6 != netip.MustParseAddr("2001:db8:0:1::2") {
			t.Fatalf("host IPv6 addresses %v %v", h1.Addr6, h2.Addr6)
		}
		if out, err := Ping(h1.NS, h2.Addr6.String(), 3); err != nil {
			t.Fatalf("direct=%v: host 1 -> host 2 over the IPv6 underlay: %v\n%s", direct, err, out)
		}
		if out := h1.MustRun("ip", "-6", "route", "show", "default"); !strings.Contains(out, "dev eth0") {
			t.Errorf("host 1 IPv6 default route: %q", out)
		}
	}
	// Pods of both families, and of IPv6 only.
	b, err := New(Options{Name: "v6p", Hosts: 2, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	dual, only6 := b.Hosts[0], b.Hosts[1]
	if err := dual.AddPodsFamilies(2, 1450, netip.MustParsePrefix("198.18.1.1/24"), netip.MustParsePrefix("2001:db8:100:1::1/64")); err != nil {
		t.Fatal(err)
	}
	if err := only6.AddPodsFamilies(1, 1430, netip.MustParsePrefix("2001:db8:100:2::1/64")); err != nil {
		t.Fatal(err)
	}
	p1, p2 := dual.Pods[0], dual.Pods[1]
	if p1.Addr != netip.MustParseAddr("198.18.1.2") || p1.Addr6 != netip.MustParseAddr("2001:db8:100:1::2") || p2.Addr6 != netip.MustParseAddr("2001:db8:100:1::3") {
		t.Errorf("dual-stack pods %v/%v %v/%v", p1.Addr, p1.Addr6, p2.Addr, p2.Addr6)
	}
	if p := only6.Pods[0]; p.Addr != p.Addr6 || p.Addr6 != netip.MustParseAddr("2001:db8:100:2::2") {
		t.Errorf("IPv6-only pod: Addr %v Addr6 %v, want both 2001:db8:100:2::2", p.Addr, p.Addr6)
	}
	for _, dst := range []netip.Addr{p2.Addr, p2.Addr6, netip.MustParseAddr("2001:db8:100:1::1")} {
		if out, err := Ping(p1.NS, dst.String(), 2); err != nil {
			t.Errorf("pod -> %v through cni0: %v\n%s", dst, err, out)
		}
	}
	if out := only6.Pods[0].MustRun("ip", "-4", "addr", "show", "dev", "eth0"); strings.Contains(out, "inet ") {
		t.Errorf("IPv6-only pod has IPv4:\n%s", out)
	}
}
