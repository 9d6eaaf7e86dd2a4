package encap

import (
	"net/netip"
	"testing"
)

var (
	hostA6 = netip.MustParseAddrPort("[2001:db8:0:1::1]:8285")
	hostB6 = netip.MustParseAddrPort("[2001:db8:0:1::2]:8285")
)

// pair6 opens two IPv6 ends on lo of a fresh namespace, next to IPv4 ones
// on the same port (the sockets are IPv6-only).
func pair6(tb testing.TB) (*Conn, *Conn) {
	tb.Helper()
	ns, _, _ := pair(tb)
	ns.Exec(tb, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0") // testbed.Namespace turns IPv6 off
	for _, a := range []netip.AddrPort{hostA6, hostB6} {
		ns.IP(tb, "addr", "add", a.Addr().String()+"/128", "dev", "lo", "nodad")
	}
	return listenIn(tb, ns, Config{Addr: hostA6}), listenIn(tb, ns, Config{Addr: hostB6})
}

func TestIPv6BatchRoundTrip(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gso"}[gso], func(t *testing.T) {
			a, b := pair6(t)
			if g, _ := a.Offloads(); gso && !g {
				t.Skip("kernel has no UDP GSO")
			}
			a.gso.Store(gso)
			if a.LocalAddr() != hostA6 {
				t.Fatalf("LocalAddr %v", a.LocalAddr())
			}
			sent := outgoing(hostB6, []int{1400, 1400, 1400, 700, 60})
			if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			checkReceived(t, readAll(t, b, len(sent), 2048), sent, hostA6)
		})
	}
}

func TestIPv6SocketRefusesIPv4Destinations(t *testing.T) {
	a, b := pair6(t)
	sent := outgoing(hostB6, []int{10, 20})
	sent[1].Addr = hostB
	if n, err := a.WriteBatch(sent); n != 1 || err == nil {
		t.Fatalf("WriteBatch = %d, %v; want 1 and an error for the IPv4 destination", n, err)
	}
	checkReceived(t, readAll(t, b, 1, 2048), sent[:1], hostA6)
}
