package encap

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

var (
	hostA6 = netip.MustParseAddrPort("[2001:db8:0:1::1]:8285")
	hostB6 = netip.MustParseAddrPort("[2001:db8:0:1::2]:8285")
)

// pair6 opens two IPv6 ends on lo of a fresh namespace, next to IPv4 ones
// on the same port (the sockets are IPv6-only).
func pair6(tb testing.TB) (*Conn, *Conn) {
	a, b, _ := pair6NS(tb)
	return a, b
}

// pair6NS is pair6 with the namespace.
func pair6NS(tb testing.TB) (*Conn, *Conn, testbed.NS) {
	tb.Helper()
	ns, _, _ := pair(tb)
	ns.EnableIPv6(tb)
	for _, a := range []netip.AddrPort{hostA6, hostB6} {
		ns.IP(tb, "addr", "add", a.Addr().String()+"/128", "dev", "lo", "nodad")
	}
	ns.WaitRouteV6(tb, hostB6.Addr().String(), hostA6.Addr().String())
	a, b := listenIn(tb, ns, Config{Addr: hostA6}), listenIn(tb, ns, Config{Addr: hostB6})
	waitDelivery(tb, a, b)
	return a, b, ns
}

// waitDelivery sends probes from a to b until one arrives, then empties
// b's queue. In a namespace whose IPv6 was just turned on, the first
// datagrams between two fresh addresses on lo are sometimes routed to the
// kernel's discard entry although "ip route get" shows the local route
// (Ip6OutNoRoutes counts them; about 1 run in 10); the sockets under test
// are not the cause, the probes see the same.
func waitDelivery(tb testing.TB, a, b *Conn) {
	tb.Helper()
	read := func(d time.Duration) int {
		udp := b.closer.(*net.UDPConn) // pair6's Conns are not SelfPolled
		udp.SetReadDeadline(time.Now().Add(d))
		defer udp.SetReadDeadline(time.Time{})
		n, _ := b.ReadBatch(incoming(8, 64))
		return n
	}
	if err := testbed.Eventually(10*time.Second, func() error {
		if _, err := a.WriteBatch(outgoing(b.LocalAddr(), []int{1})); err != nil {
			return err
		}
		if read(200*time.Millisecond) == 0 {
			return fmt.Errorf("no probe from %v reached %v", a.LocalAddr(), b.LocalAddr())
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	for read(50*time.Millisecond) > 0 {
	}
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
	next, sent := handOverQueued(t, a, b, Config{SelfPolled: true})
	in := incoming(8, 2048)
	err := next.Hold(func(fd int) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Fatalf("poll = %d, %v; want the socket readable", n, err)
		}
		n, err := next.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		checkReceived(t, in[:n], sent, hostA6)
	})
	if err != nil {
		t.Fatal(err)
	}
}
