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
	sent := outgoing(hostB6, []int{10, 20})
	sent[1].Addr = hostB
	if n, err := a.WriteBatch(sent); n != 1 || err == nil {
		t.Fatalf("WriteBatch = %d, %v; want 1 and an error for the IPv4 destination", n, err)
	}
	checkReceived(t, readAll(t, b, 1, 2048), sent[:1], hostA6)
}

// TestIPv6SelfPolled: the udp backend's IPv6 sockets are SelfPolled: one
// binds its IPv6 address (IPv6-only, beside the IPv4 socket on the same
// port) and receives a datagram with its IPv6 sender.
func TestIPv6SelfPolled(t *testing.T) {
	a, _, ns := pair6NS(t)
	var b *Conn
	var err error
	ns.In(t, func() {
		b, err = Listen(Config{Addr: netip.MustParseAddrPort("[2001:db8:0:1::2]:8286"), SelfPolled: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.LocalAddr().String() != "[2001:db8:0:1::2]:8286" {
		t.Fatalf("LocalAddr %v", b.LocalAddr())
	}
	if n, err := a.WriteBatch(outgoing(b.LocalAddr(), []int{100})); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	in := incoming(4, 2048)
	err = b.Hold(func(fd int) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Fatalf("poll = %d, %v; want the socket readable", n, err)
		}
		if n, err := b.ReadBatch(in); n != 1 || err != nil || in[0].N != 100 || in[0].Addr != hostA6 {
			t.Fatalf("ReadBatch = %d, %v, %d bytes from %v; want 100 bytes from %v", n, err, in[0].N, in[0].Addr, hostA6)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An IPv6 socket changes hands as an IPv4 one does: the successor's
// self-polled Conn is on the same address and reads what waited in it.
func TestAdoptIPv6Socket(t *testing.T) {
	a, b := pair6(t)
	sent := outgoing(hostB6, []int{10, 20, 30})
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	f, err := b.DupFile()
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // the old owner leaves
	next, err := Adopt(Config{SelfPolled: true}, f)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.LocalAddr() != hostB6 {
		t.Errorf("adopted socket on %v, want %v", next.LocalAddr(), hostB6)
	}
	in := incoming(8, 2048)
	err = next.Hold(func(fd int) {
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
