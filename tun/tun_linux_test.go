package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/testbed"
)

const (
	tunAddr   = "198.18.0.1"     // the device's own /32, as flannel configures flannel0
	overlay   = "198.18.0.0/16"  // routed into the device
	headroom  = 16               // offset used by the tests, like a caller's header room
	bufSize   = headroom + 65535 // fits a super-packet in VnetHdr mode
	waitLimit = 5 * time.Second
)

// openConfigured opens a device inside a fresh namespace, gives it flannel's
// address layout and brings it up. ip_forward is on so that a packet
// written into the device for another overlay address is routed back out
// of it: the TUN loop the benchmarks and allocation tests use.
func openConfigured(tb testing.TB, cfg Config) (testbed.NS, *Device) {
	tb.Helper()
	ns := testbed.Namespace(tb, "tun")
	var dev *Device
	var err error
	ns.In(tb, func() { dev, err = Open(cfg) })
	if err != nil {
		tb.Fatalf("Open(%+v): %v", cfg, err)
	}
	tb.Cleanup(func() { dev.Close() })
	configure(tb, ns, dev.Name())
	return ns, dev
}

// configure gives a device in ns flannel's layout: its /32 address, up,
// the whole overlay routed into it.
func configure(tb testing.TB, ns testbed.NS, name string) {
	tb.Helper()
	ns.Exec(tb, "sysctl", "-qw", "net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf."+name+".send_redirects=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf."+name+".rp_filter=0")
	ns.IP(tb, "addr", "add", tunAddr+"/32", "dev", name)
	ns.IP(tb, "link", "set", name, "up")
	ns.IP(tb, "route", "add", overlay, "dev", name)
}

// udpIn opens a UDP socket bound to laddr inside the namespace.
func udpIn(tb testing.TB, ns testbed.NS, laddr string) *net.UDPConn {
	tb.Helper()
	var c *net.UDPConn
	var err error
	ns.In(tb, func() { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(laddr))) })
	if err != nil {
		tb.Fatalf("listen %s: %v", laddr, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func makeBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	return bufs, make([]int, n)
}

// readWithin waits, as the forwarder does, on the descriptor Hold lends
// until q has a packet, then reads what is ready; it fails the test when
// nothing comes in time.
func readWithin(tb testing.TB, q *Queue, bufs [][]byte, sizes []int, offset int) int {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		n, err := q.Read(bufs, sizes, offset)
		if err != nil {
			tb.Fatalf("Read: %v", err)
		}
		if n > 0 {
			return n
		}
		err = q.Hold(func(fd, _ int) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1) //nolint:errcheck // the next Read says
		})
		if err != nil {
			tb.Fatalf("Hold: %v", err)
		}
	}
	tb.Fatalf("no packet to Read within %v", waitLimit)
	return 0
}

// ipv4UDP builds an IPv4/UDP packet with a valid header checksum and UDP
// checksum 0 (allowed for IPv4).
func ipv4UDP(src, dst netip.AddrPort, ttl byte, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	p[8] = ttl
	p[9] = 17
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:], ipChecksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udpPayload checks that pkt is IPv4/UDP from src to dst and returns its payload.
func udpPayload(tb testing.TB, pkt []byte, src, dst netip.AddrPort) []byte {
	tb.Helper()
	if len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[9] != 17 {
		tb.Fatalf("not an IPv4/UDP packet: % x", pkt[:min(len(pkt), 40)])
	}
	ihl := int(pkt[0]&0x0f) * 4
	gotSrc := netip.AddrPortFrom(netip.AddrFrom4([4]byte(pkt[12:16])), binary.BigEndian.Uint16(pkt[ihl:]))
	gotDst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(pkt[16:20])), binary.BigEndian.Uint16(pkt[ihl+2:]))
	if gotSrc != src || gotDst != dst {
		tb.Fatalf("packet %v -> %v, want %v -> %v", gotSrc, gotDst, src, dst)
	}
	if total := int(binary.BigEndian.Uint16(pkt[2:])); total != len(pkt) {
		tb.Fatalf("IPv4 total length %d, read size %d", total, len(pkt))
	}
	return pkt[ihl+8:]
}

func TestReadReturnsPacketRoutedIntoDevice(t *testing.T) {
	ns, dev := openConfigured(t, Config{Name: "flu0"})
	if dev.Name() != "flu0" {
		t.Fatalf("Name() = %q, want flu0", dev.Name())
	}
	src := netip.MustParseAddrPort(tunAddr + ":4000")
	dst := netip.MustParseAddrPort("198.18.1.2:9999")
	c := udpIn(t, ns, src.String())
	msg := []byte("hello from the overlay")
	if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := makeBufs(4)
	// Mark the headroom: Read must not touch it.
	for i := range headroom {
		bufs[0][i] = 0xAA
	}
	n := readWithin(t, dev.Queues()[0], bufs, sizes, headroom)
	if n != 1 {
		t.Fatalf("Read returned %d packets, want 1", n)
	}
	if got := udpPayload(t, bufs[0][headroom:headroom+sizes[0]], src, dst); !bytes.Equal(got, msg) {
		t.Fatalf("payload %q, want %q", got, msg)
	}
	if !bytes.Equal(bufs[0][:headroom], bytes.Repeat([]byte{0xAA}, headroom)) {
		t.Fatalf("Read wrote into the headroom: % x", bufs[0][:headroom])
	}
}

func TestWriteDeliversPacketToLocalSocket(t *testing.T) {
	ns, dev := openConfigured(t, Config{Name: "flu0"})
	dst := netip.MustParseAddrPort(tunAddr + ":5000")
	src := netip.MustParseAddrPort("198.18.7.7:6000")
	c := udpIn(t, ns, dst.String())
	msg := []byte("written into the tun")
	pkt := append(make([]byte, headroom), ipv4UDP(src, dst, 64, msg)...)
	n, err := dev.Queues()[0].Write([][]byte{pkt}, headroom)
	if err != nil || n != 1 {
		t.Fatalf("Write = %d, %v; want 1, nil", n, err)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 2048)
	m, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("socket read: %v", err)
	}
	if from != src || !bytes.Equal(buf[:m], msg) {
		t.Fatalf("socket got %q from %v, want %q from %v", buf[:m], from, msg, src)
	}
}

func TestWriteReportsRejectedPacket(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	good := ipv4UDP(netip.MustParseAddrPort("198.18.7.7:1"), netip.MustParseAddrPort(tunAddr+":2"), 64, []byte("x"))
	// An empty write is rejected by tun_get_user with EINVAL.
	n, err := dev.Queues()[0].Write([][]byte{good, good[:0], good}, 0)
	if n != 1 || err == nil {
		t.Fatalf("Write = %d, %v; want 1 and an error for packet 1", n, err)
	}
	if !strings.Contains(err.Error(), "packet 1") {
		t.Fatalf("error %q does not name the rejected packet", err)
	}
}

func TestWritePartsDeliversConcatenation(t *testing.T) {
	ns, dev := openConfigured(t, Config{Name: "flu0"})
	dst := netip.MustParseAddrPort(tunAddr + ":5000")
	c := udpIn(t, ns, dst.String())
	msg := []byte("gathered from three places")
	pkt := ipv4UDP(netip.MustParseAddrPort("198.18.7.7:6000"), dst, 64, msg)
	// Header, an empty part (skipped) and the payload in two pieces.
	parts := [][]byte{pkt[:28], nil, pkt[28:35], pkt[35:]}
	if n, err := dev.Queues()[0].WriteParts([][][]byte{parts}); n != 1 || err != nil {
		t.Fatalf("WriteParts = %d, %v; want 1, nil", n, err)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 2048)
	if m, _, err := c.ReadFromUDPAddrPort(buf); err != nil || !bytes.Equal(buf[:m], msg) {
		t.Fatalf("socket got %q, %v; want %q", buf[:m], err, msg)
	}
}

func TestWritePartsReportsRejectedPacket(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	good := ipv4UDP(netip.MustParseAddrPort("198.18.7.7:1"), netip.MustParseAddrPort(tunAddr+":2"), 64, []byte("x"))
	pkts := [][][]byte{{good}, {nil}, {good[:10], good[10:]}}
	n, err := dev.Queues()[0].WriteParts(pkts)
	if n != 1 || err == nil || !strings.Contains(err.Error(), "packet 1") {
		t.Fatalf("WriteParts = %d, %v; want 1 and an error naming packet 1", n, err)
	}
	if n, err := dev.Queues()[0].WriteParts(pkts[2:]); n != 1 || err != nil {
		t.Fatalf("WriteParts after the rejected packet = %d, %v", n, err)
	}
}

func TestReadDrainsQueuedPacketsInOneCall(t *testing.T) {
	ns, dev := openConfigured(t, Config{Name: "flu0"})
	src := netip.MustParseAddrPort(tunAddr + ":4000")
	c := udpIn(t, ns, src.String())
	const sent = 8
	for i := range sent {
		dst := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.2"), uint16(9000+i))
		if _, err := c.WriteToUDPAddrPort([]byte{byte(i)}, dst); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes := makeBufs(16)
	q := dev.Queues()[0]
	first := readWithin(t, q, bufs, sizes, headroom)
	if first < 2 {
		t.Fatalf("first Read returned %d packets with %d queued, want a batch", first, sent)
	}
	got := 0
	check := func(n int) {
		for i := range n {
			dst := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.2"), uint16(9000+got))
			p := udpPayload(t, bufs[i][headroom:headroom+sizes[i]], src, dst)
			if len(p) != 1 || int(p[0]) != got {
				t.Fatalf("packet %d payload % x, want %02x", got, p, got)
			}
			got++
		}
	}
	check(first)
	for got < sent {
		check(readWithin(t, q, bufs, sizes, headroom))
	}
}

func TestReadRejectsShortSizes(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	bufs, _ := makeBufs(2)
	if _, err := dev.Queues()[0].Read(bufs, make([]int, 1), 0); err == nil {
		t.Fatal("Read with len(sizes) < len(bufs) returned no error")
	}
}

// Close wakes a reader waiting on its queue and the closing eventfd, as
// the forwarder waits, and its next Read fails as closed.
func TestCloseWakesAWaitingReader(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	q := dev.Queues()[0]
	done := make(chan error, 1)
	// The reader waits and reads until it gets an error: the kernel may
	// queue a packet of its own on the new device (an IPv6 router
	// solicitation), which wakes it before Close does.
	go func() {
		bufs, sizes := makeBufs(1)
		for {
			err := q.Hold(func(fd, closing int) {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(closing), Events: unix.POLLIN}}
				for {
					if _, err := unix.Poll(fds, -1); err != unix.EINTR {
						return
					}
				}
			})
			if err == nil {
				_, err = q.Read(bufs, sizes, 0)
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close returned %v, want os.ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not wake the waiting reader")
	}
}

func TestMultiQueueOpensEveryQueue(t *testing.T) {
	ns, dev := openConfigured(t, Config{Name: "flu0", Queues: 2})
	if len(dev.Queues()) != 2 {
		t.Fatalf("Queues() has %d entries, want 2", len(dev.Queues()))
	}
	if out := ns.IP(t, "-d", "link", "show", "flu0"); !strings.Contains(out, "multi_queue numqueues 2") {
		t.Fatalf("ip -d link does not show 2 queues:\n%s", out)
	}
	// Every queue writes into the same interface.
	dst := netip.MustParseAddrPort(tunAddr + ":5000")
	c := udpIn(t, ns, dst.String())
	c.SetReadDeadline(time.Now().Add(waitLimit))
	for i, q := range dev.Queues() {
		src := netip.AddrPortFrom(netip.MustParseAddr("198.18.7.7"), uint16(100+i))
		if n, err := q.Write([][]byte{ipv4UDP(src, dst, 64, []byte{byte(i)})}, 0); n != 1 || err != nil {
			t.Fatalf("queue %d Write = %d, %v", i, n, err)
		}
		buf := make([]byte, 64)
		m, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || from != src || m != 1 || buf[0] != byte(i) {
			t.Fatalf("queue %d: socket got % x from %v (%v)", i, buf[:m], from, err)
		}
	}
}

func TestVnetHdrNegotiatesOffloads(t *testing.T) {
	ns, dev := openConfigured(t, Config{Name: "flu0", VnetHdr: true})
	want := OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadUSO4 | OffloadUSO6
	if got := dev.Offloads(); got != want {
		t.Fatalf("Offloads() = %v, want %v (kernel 6.18 accepts USO)", got, want)
	}
	if out := ns.IP(t, "-d", "link", "show", "flu0"); !strings.Contains(out, "vnet_hdr on") {
		t.Fatalf("ip -d link does not show vnet_hdr on:\n%s", out)
	}
	// A datagram routed into the device arrives behind a 10-byte header.
	src := netip.MustParseAddrPort(tunAddr + ":4000")
	dst := netip.MustParseAddrPort("198.18.1.2:9999")
	c := udpIn(t, ns, src.String())
	if _, err := c.WriteToUDPAddrPort([]byte("vnet"), dst); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := makeBufs(1)
	if n := readWithin(t, dev.Queues()[0], bufs, sizes, headroom); n != 1 {
		t.Fatalf("Read returned %d, want 1", n)
	}
	frame := bufs[0][headroom : headroom+sizes[0]]
	if got := udpPayload(t, frame[packet.VirtioNetHdrLen:], src, dst); string(got) != "vnet" {
		t.Fatalf("payload after vnet header %q", got)
	}
	// And a frame with an all-zero header (no offload) is delivered.
	dst2 := netip.MustParseAddrPort(tunAddr + ":5000")
	c2 := udpIn(t, ns, dst2.String())
	out := append(make([]byte, packet.VirtioNetHdrLen), ipv4UDP(netip.MustParseAddrPort("198.18.7.7:1"), dst2, 64, []byte("in"))...)
	if n, err := dev.Queues()[0].Write([][]byte{out}, 0); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	c2.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 64)
	if m, _, err := c2.ReadFromUDPAddrPort(buf); err != nil || string(buf[:m]) != "in" {
		t.Fatalf("socket got %q, %v", buf[:m], err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	if _, err := Open(Config{Name: "a-name-much-too-long-for-linux"}); err == nil {
		t.Fatal("Open accepted a 30-character interface name")
	}
	if _, err := Open(Config{Queues: 1000}); err == nil {
		t.Fatal("Open accepted 1000 queues")
	}
}

func TestOffloadString(t *testing.T) {
	cases := map[Offload]string{
		0:                          "none",
		OffloadCsum | OffloadTSO4:  "csum|tso4",
		OffloadUSO6 | Offload(0x8): "uso6|unknown",
	}
	for o, want := range cases {
		if got := o.String(); got != want {
			t.Errorf("Offload(%#x).String() = %q, want %q", uint32(o), got, want)
		}
	}
}

func TestReadDropsPacketLargerThanBuffer(t *testing.T) {
	reg := metrics.NewRegistry()
	ns, dev := openConfigured(t, Config{Name: "flu0", Metrics: reg})
	src := netip.MustParseAddrPort(tunAddr + ":4000")
	dst := netip.MustParseAddrPort("198.18.1.2:9")
	c := udpIn(t, ns, src.String())
	c.WriteToUDPAddrPort(make([]byte, 100), dst) // 128 bytes on the wire
	c.WriteToUDPAddrPort([]byte("fits"), dst)    // 32 bytes
	bufs := [][]byte{make([]byte, headroom+64), make([]byte, headroom+64)}
	sizes := make([]int, 2)
	n := readWithin(t, dev.Queues()[0], bufs, sizes, headroom)
	if exposed := metricsText(t, reg); n != 1 || !strings.Contains(exposed, "flannelu_tun_truncated_packets_total 1\n") {
		t.Fatalf("Read = %d packets, metrics:\n%s\nwant the small one and flannelu_tun_truncated_packets_total 1", n, exposed)
	}
	if got := udpPayload(t, bufs[0][headroom:headroom+sizes[0]], src, dst); string(got) != "fits" {
		t.Fatalf("payload %q, want \"fits\"", got)
	}
}

// metricsText is what reg exposes to a scraper.
func metricsText(tb testing.TB, reg *metrics.Registry) string {
	tb.Helper()
	var b strings.Builder
	if _, err := reg.WriteTo(&b); err != nil {
		tb.Fatal(err)
	}
	return b.String()
}
