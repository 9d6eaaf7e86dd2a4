package testbed

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// IPv6 addresses of the testbed (documentation space): the underlay
// 2001:db8:0:1::/64 with host i at ::<i> and the switch at ::fe, and the
// pod network flannelu's IPv6 configs use.
var (
	UnderlayV6        = netip.MustParsePrefix("2001:db8:0:1::/64")
	UnderlayGatewayV6 = netip.MustParseAddr("2001:db8:0:1::fe")
	PodNetworkV6      = netip.MustParsePrefix("2001:db8:100::/48")
)

// HostAddrV6 is host i's IPv6 underlay address, 2001:db8:0:1::<i>.
func HostAddrV6(i int) netip.Addr {
	a := UnderlayV6.Addr().As16()
	a[15] = byte(i)
	return netip.AddrFrom16(a)
}

// buildIPv6 gives the underlay its IPv6 half (Options.IPv6): the switch's
// br0 at ::fe, each host's eth0 at ::<i> with its IPv6 default route via
// the switch (via the other host when Direct), IPv6 forwarding on. The
// addresses skip duplicate address detection, which would keep them
// unusable for a second; only documentation addresses are used, so there
// is nothing to collide with.
func (b *Bed) buildIPv6() {
	if b.Switch != nil {
		b.Switch.MustRun("ip", "-6", "addr", "add", prefixV6(UnderlayGatewayV6), "dev", "br0", "nodad")
	}
	for _, h := range b.Hosts {
		h.Addr6 = HostAddrV6(h.Index)
		h.MustRun("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		h.MustRun("ip", "-6", "addr", "add", prefixV6(h.Addr6), "dev", h.Iface, "nodad")
	}
	for _, h := range b.Hosts {
		gw := UnderlayGatewayV6
		if b.Switch == nil {
			gw = b.Hosts[2-h.Index].Addr6 // Direct: the other host
		}
		h.MustRun("ip", "-6", "route", "add", "default", "via", gw.String())
	}
}

func prefixV6(a netip.Addr) string { return netip.PrefixFrom(a, UnderlayV6.Bits()).String() }

// SettleV6 waits until no IPv6 address in the namespace is tentative. The
// kernel runs duplicate address detection on every new link-local address
// for about a second, and a pod answers no neighbour solicitation until it
// is done (2.0-2.4 s after creation, measured); CNI plugins wait for the
// same before they return.
func (ns NS) SettleV6(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := ns.Run("ip", "-6", "addr", "show")
		if err == nil && !strings.Contains(out, "tentative") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: IPv6 addresses still tentative after %v: %v\n%s", ns.Name, timeout, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// EnableIPv6 turns IPv6 back on in a namespace Namespace made (all,
// default and lo) and waits until lo's ::1 is routed: the kernel finishes
// turning IPv6 on in a work queue, and an address added before that can
// be left without a route (sends then fail as Ip6OutNoRoutes; seen in 1
// test run in 10).
func (ns NS) EnableIPv6(tb testing.TB) {
	tb.Helper()
	ns.Exec(tb, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0", "net.ipv6.conf.lo.disable_ipv6=0")
	ns.WaitRouteV6(tb, "::1", "")
}

// WaitRouteV6 waits until the namespace has a route to dst (from src when
// src is not empty).
func (ns NS) WaitRouteV6(tb testing.TB, dst, src string) {
	tb.Helper()
	args := []string{"ip", "-6", "route", "get", dst}
	if src != "" {
		args = append(args, "from", src)
	}
	err := Eventually(5*time.Second, func() error {
		if out, err := ns.Run(args...); err != nil {
			return fmt.Errorf("%v: %v %s", args, err, out)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}
