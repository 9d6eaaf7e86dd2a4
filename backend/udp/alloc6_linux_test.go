package udp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// newRig6 is newRig for a dual-stack backend: both underlays on lo
// (192.0.2.1/2 and 2001:db8:0:1::1/2), own lease 198.18.1.0/24 +
// 2001:db8:100:1::/64, peer 2 dual stack; the pod and peer sockets speak
// IPv6, the peer's over the IPv6 underlay.
func newRig6(t *testing.T, offloads bool) *rig {
	testbed.RequireRoot(t)
	r := &rig{ns: testbed.Namespace(t, "udp-alloc6")}
	r.ns.EnableIPv6(t)
	for _, args := range [][]string{
		{"ip", "addr", "add", "192.0.2.1/32", "dev", "lo"},
		{"ip", "addr", "add", "192.0.2.2/32", "dev", "lo"},
		{"ip", "addr", "add", "2001:db8:0:1::1/128", "dev", "lo", "nodad"},
		{"ip", "addr", "add", "2001:db8:0:1::2/128", "dev", "lo", "nodad"},
		{"ip", "route", "add", "blackhole", "198.18.1.0/24"},
		{"ip", "-6", "route", "add", "blackhole", "2001:db8:100:1::/64"},
	} {
		r.ns.Exec(t, args...)
	}
	r.ns.WaitRouteV6(t, "2001:db8:0:1::2", "2001:db8:0:1::1")
	r.ns.In(t, func() { waitDelivery6(t, "[2001:db8:0:1::2]:9999", "[2001:db8:0:1::1]:9999") })
	err := r.ns.Do(func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		lo.MTU = 1500
		ext := *dualExt
		ext.Iface = lo
		if r.b, err = New(&ext, Options{Network: netip.MustParsePrefix("198.18.0.0/16"), Network6: network6, Offload: offloads,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
			return err
		}
		if err := r.b.Start(context.Background(), dualLease(1, true)); err != nil {
			return err
		}
		if r.pod, err = connectedUDP(netip.AddrPort{}, netip.MustParseAddrPort("[2001:db8:100:2::5]:9")); err != nil {
			return err
		}
		r.peer, err = connectedUDP(netip.MustParseAddrPort("[2001:db8:0:1::2]:8285"), netip.MustParseAddrPort("[2001:db8:0:1::1]:8285"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.b.close(); unix.Close(r.pod); unix.Close(r.peer) })
	r.b.HandleEvents(context.Background(), added(dualLease(2, true)))
	r.w = newWorker(r.b, r.b.dev.Queues()[0], r.b.conns[0], r.b.conns6[0])
	return r
}

// TestForwardingIPv6AllocatesNothing is TestForwardingAllocatesNothing for
// IPv6 pods over the IPv6 underlay: a pod's IPv6 datagrams read from the
// real TUN and sent on the IPv6 socket, and a peer's datagrams received
// on it and written into the TUN (by the second outside half).
func TestForwardingIPv6AllocatesNothing(t *testing.T) {
	for _, offloads := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "offload"}[offloads], func(t *testing.T) {
			r := newRig6(t, offloads)
			forwardWithoutAllocs(t, r, innerPacket(t, "2001:db8:100:2::5", "2001:db8:100:1::7", 600))
		})
	}
}

// waitDelivery6 sends probes between two fresh IPv6 addresses until one
// arrives: right after IPv6 is turned on in a namespace the first
// datagrams are sometimes routed to the kernel's discard entry (see
// encap's waitDelivery), and a lost peer datagram would leave the outside
// half waiting for ever.
func waitDelivery6(t *testing.T, from, to string) {
	t.Helper()
	dst := netip.MustParseAddrPort(to)
	recv, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(recv)
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(recv, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Bind(recv, sockaddrOf(dst)); err != nil {
		t.Fatal(err)
	}
	send, err := connectedUDP(netip.MustParseAddrPort(from), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(send)
	if err := testbed.Eventually(10*time.Second, func() error {
		unix.Write(send, []byte{1})
		if _, _, err := unix.Recvfrom(recv, make([]byte, 16), 0); err != nil {
			return fmt.Errorf("no probe reached %s: %w", to, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
