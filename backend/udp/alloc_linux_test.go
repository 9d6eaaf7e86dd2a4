package udp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/poller"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
	"github.com/flannelu/flannelu/tun"
)

// rig is one udp backend in its own namespace: own lease 198.18.1.0/24 on
// 192.0.2.1, one peer 198.18.2.0/24 at 192.0.2.2 (both addresses on lo), a
// socket that plays the peer, and a socket that plays a local pod. With
// encap.IPIP the backend runs the ipip encapsulation and the peer is a raw
// socket of protocol 4, the kernel writing its outer header.
type rig struct {
	ns   testbed.NS
	reg  *metrics.Registry // the backend's metrics
	b    *Backend
	w    *worker
	pod  int // raw fd: UDP socket connected to a peer pod's address
	peer int // raw fd: UDP socket bound to 192.0.2.2:8285 (IPIP: a protocol-4 socket on 192.0.2.2), connected to us
}

func newRig(t *testing.T, offloads bool) *rig { return newRigOf(t, offloads, encap.UDP) }

func newRigOf(t *testing.T, offloads bool, enc encap.Encapsulation) *rig {
	testbed.RequireRoot(t)
	r := &rig{ns: testbed.Namespace(t, "udp-alloc"), reg: metrics.NewRegistry()}
	for _, args := range [][]string{
		{"ip", "addr", "add", "192.0.2.1/32", "dev", "lo"},
		{"ip", "addr", "add", "192.0.2.2/32", "dev", "lo"},
		// Packets the outside half writes for our own subnet end here.
		{"ip", "route", "add", "blackhole", "198.18.1.0/24"},
	} {
		if out, err := r.ns.Run(args...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	err := r.ns.Do(func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		lo.MTU = 1500 // the overlay MTU follows a normal underlay, not lo's 64 KiB
		ext := &backend.ExternalInterface{Iface: lo, IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1")}
		if r.b, err = New(ext, Options{Encap: enc, Network: netip.MustParsePrefix("198.18.0.0/16"), Offload: offloads, Metrics: r.reg,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
			return err
		}
		own := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.1.0/24")}
		if err := r.b.Start(context.Background(), own); err != nil {
			return err
		}
		r.pod, err = connectedUDP(netip.AddrPort{}, netip.MustParseAddrPort("198.18.2.5:9"))
		if err != nil {
			return err
		}
		if enc == encap.IPIP {
			r.peer, err = connectedIPIP(netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"))
			return err
		}
		r.peer, err = connectedUDP(netip.MustParseAddrPort("192.0.2.2:8285"), netip.MustParseAddrPort("192.0.2.1:8285"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.b.close(); unix.Close(r.pod); unix.Close(r.peer) })
	if r.b.vnet != offloads {
		t.Fatalf("offload mode = %v, want %v", r.b.vnet, offloads)
	}
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.2")}
	if enc == encap.IPIP {
		attrs.BackendType = "ipip"
	}
	r.b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventAdded, Lease: subnet.Lease{
		Subnet: netip.MustParsePrefix("198.18.2.0/24"), Attrs: attrs,
	}}})
	if r.b.routes.Snapshot().Len() != 1 {
		t.Fatal("the peer lease was not taken")
	}
	r.w = newWorker(r.b, r.b.dev.Queues()[0], r.b.conns[0], nil)
	return r
}

// connectedUDP opens a raw UDP socket of dst's family (bound to local when
// given) connected to dst: writes on it allocate nothing, unlike
// net.Conn's.
func connectedUDP(local, dst netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, 0)
	if err != nil {
		return -1, err
	}
	if local.IsValid() {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(fd, sockaddrOf(local)); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Connect(fd, sockaddrOf(dst)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// connectedIPIP opens a raw IPv4 socket of protocol 4 bound to local and
// connected to dst: what it writes goes out as IPIP, the kernel adding the
// outer header, and it reads every protocol-4 packet sent to local.
func connectedIPIP(local, dst netip.Addr) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_IPIP)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is6() {
		return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

// TestForwardingAllocatesNothing holds both directions, with and without
// offloads, to zero allocations per batch, moved by the worker's loop (its
// ppoll turns): a pod's datagrams read from the real TUN and sent to the
// peer, and a peer's datagrams received on the real socket and written
// into the TUN.
func TestForwardingAllocatesNothing(t *testing.T) {
	for _, offloads := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "offload"}[offloads]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, offloads)
			forwardWithoutAllocs(t, r, innerPacket(t, "198.18.2.5", "198.18.1.7", 600))
		})
	}
}

// forwardWithoutAllocs moves batches both ways through a rig with the
// worker's turns and fails on any allocation: the pod's 512-byte
// datagrams read from the TUN and sent, and the peer's datagrams carrying
// inner received (on the socket of the peer's family) and written into
// the TUN.
func forwardWithoutAllocs(t *testing.T, r *rig, inner []byte) {
	t.Helper()
	payload := make([]byte, 512)
	r.hold(t, func(p *poller.Poller) {
		var pace pace
		inside := func() {
			for i := 0; i < 8; i++ {
				unix.Write(r.pod, payload)
			}
			r.turnUntil(t, p, &pace, drop.Inside, 8)
		}
		outside := func() {
			for i := 0; i < 8; i++ {
				unix.Write(r.peer, inner)
			}
			r.turnUntil(t, p, &pace, drop.Outside, 8)
		}
		inside()
		outside() // warm up: first batches size internal tables
		if a := testing.AllocsPerRun(50, inside); a != 0 {
			t.Errorf("inside (TUN -> UDP): %.1f allocations per batch, want 0", a)
		}
		if a := testing.AllocsPerRun(50, outside); a != 0 {
			t.Errorf("outside (UDP -> TUN): %.1f allocations per batch, want 0", a)
		}
		if r.b.vnet {
			splitWithoutAllocs(t, r, p, &pace, isIPv6(inner))
		}
	})
	inPkts, _ := r.b.drops.Forwarded(drop.Inside)
	outPkts, _ := r.b.drops.Forwarded(drop.Outside)
	if inPkts < 8*50 || outPkts < 8*50 {
		t.Fatalf("forwarded inside %d, outside %d packets; want at least %d each (did the batches move packets?)", inPkts, outPkts, 8*50)
	}
}

// splitWithoutAllocs holds the offload path's cutting of super-packets
// to zero allocations: the pod sends with UDP_SEGMENT, so the TUN hands
// the worker USO super-packets of 7 datagrams each, which it cuts into
// header slots and payload slices and sends with UDP_SEGMENT again.
func splitWithoutAllocs(t *testing.T, r *rig, p *poller.Poller, pace *pace, v6 bool) {
	t.Helper()
	uso := map[bool]tun.Offload{false: tun.OffloadUSO4, true: tun.OffloadUSO6}[v6]
	if !r.b.dev.Offloads().Has(uso) {
		t.Skip("the TUN takes no UDP super-packets (USO needs Linux 6.2)")
	}
	if err := unix.SetsockoptInt(r.pod, unix.SOL_UDP, unix.UDP_SEGMENT, 1200); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 6*1200+100)
	super := func() {
		for i := 0; i < 2; i++ {
			unix.Write(r.pod, big)
		}
		r.turnUntil(t, p, pace, drop.Inside, 2*7)
	}
	super()
	checkSplit(t, r)
	if a := testing.AllocsPerRun(50, super); a != 0 {
		t.Errorf("inside, super-packets (TUN -> split -> UDP GSO): %.1f allocations per batch, want 0", a)
	}
}

// hold runs fn with a poller on the rig worker's descriptors, as the
// worker's own loop has, from this goroutine's locked OS thread.
func (r *rig) hold(t *testing.T, fn func(p *poller.Poller)) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err := r.w.withHeld(func(fds ...int) {
		p := poller.New(fds...)
		defer p.Close()
		fn(p)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// turnUntil runs the worker's turns until n more packets were forwarded
// in direction dir (at most 64 turns: each turn moves at least one of
// the packets sent, or waits for them).
func (r *rig) turnUntil(t *testing.T, p *poller.Poller, pace *pace, dir drop.Direction, n uint64) {
	start, _ := r.b.drops.Forwarded(dir)
	for range 64 {
		if now, _ := r.b.drops.Forwarded(dir); now >= start+n {
			return
		}
		if stop, err := r.w.turn(p, pace); stop || err != nil {
			t.Fatalf("turn: stop %v, %v", stop, err)
		}
	}
	now, _ := r.b.drops.Forwarded(dir)
	t.Fatalf("64 turns forwarded %d of %d packets", now-start, n)
}
