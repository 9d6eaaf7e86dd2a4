package encap

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/testbed"
)

const waitLimit = 5 * time.Second

var (
	hostA = netip.MustParseAddrPort("192.0.2.1:8285")
	hostB = netip.MustParseAddrPort("192.0.2.2:8285")
)

// pair opens flannel's two ends, 192.0.2.1:8285 and 192.0.2.2:8285, on lo
// of a fresh namespace.
func pair(tb testing.TB) (testbed.NS, *Conn, *Conn) {
	tb.Helper()
	ns := pairNS(tb)
	a, b := listenIn(tb, ns, Config{Addr: hostA}), listenIn(tb, ns, Config{Addr: hostB})
	return ns, a, b
}

// pairNS is pair's namespace, with both addresses and no sockets.
func pairNS(tb testing.TB) testbed.NS {
	tb.Helper()
	ns := testbed.Namespace(tb, "encap")
	ns.IP(tb, "addr", "add", hostA.Addr().String()+"/32", "dev", "lo")
	ns.IP(tb, "addr", "add", hostB.Addr().String()+"/32", "dev", "lo")
	return ns
}

func listenIn(tb testing.TB, ns testbed.NS, cfg Config) *Conn {
	tb.Helper()
	var c *Conn
	var err error
	ns.In(tb, func() { c, err = Listen(cfg) })
	if err != nil {
		tb.Fatalf("Listen(%+v): %v", cfg, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// payload is size bytes, each seq+i, so a mixed-up datagram is seen.
func payload(seq, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(seq + i)
	}
	return b
}

func outgoing(dst netip.AddrPort, sizes []int) []Message {
	msgs := make([]Message, len(sizes))
	for i, n := range sizes {
		msgs[i] = Message{Buf: payload(i, n), N: n, Addr: dst}
	}
	return msgs
}

func incoming(n, size int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	return msgs
}

// readAll reads until want datagrams arrived, failing after waitLimit.
func readAll(tb testing.TB, c *Conn, want int, bufSize int) []Message {
	tb.Helper()
	var got []Message
	done := make(chan error, 1)
	go func() {
		for len(got) < want {
			in := incoming(want-len(got), bufSize)
			n, err := c.ReadBatch(in)
			if err != nil {
				done <- err
				return
			}
			got = append(got, in[:n]...)
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			tb.Fatalf("ReadBatch: %v", err)
		}
	case <-time.After(waitLimit):
		c.Close()
		<-done
		tb.Fatalf("only %d of %d datagrams arrived within %v", len(got), want, waitLimit)
	}
	return got
}

// checkReceived asserts that got carries sent's payloads, in order, from src.
func checkReceived(tb testing.TB, got, sent []Message, src netip.AddrPort) {
	tb.Helper()
	if len(got) != len(sent) {
		tb.Fatalf("received %d datagrams, sent %d", len(got), len(sent))
	}
	for i := range got {
		if got[i].Addr != src {
			tb.Errorf("datagram %d from %v, want %v", i, got[i].Addr, src)
		}
		if !bytes.Equal(got[i].Buf[:got[i].N], sent[i].Buf[:sent[i].N]) {
			tb.Errorf("datagram %d: %d bytes, want %d bytes of payload %d", i, got[i].N, sent[i].N, i)
		}
	}
}

// bothWays runs test on a fresh pair twice: with the sender's UDP GSO
// off, and on (skipped where the kernel has none).
func bothWays(t *testing.T, test func(t *testing.T, a, b *Conn, gso bool)) {
	for _, gso := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gso"}[gso], func(t *testing.T) {
			_, a, b := pair(t)
			if gso {
				if g, _ := a.Offloads(); !g {
					t.Skip("kernel has no UDP GSO")
				}
			} else {
				a.gso.Store(false)
			}
			test(t, a, b, gso)
		})
	}
}

func TestBatchRoundTrip(t *testing.T) {
	bothWays(t, func(t *testing.T, a, b *Conn, gso bool) {
		sizes := []int{1, 1472, 20, 0, 1400, 1400, 1400, 700, 1472, 64, 64, 64, 64, 64, 64, 65}
		sent := outgoing(hostB, sizes)
		n, err := a.WriteBatch(sent)
		if n != len(sent) || err != nil {
			t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(sent))
		}
		checkReceived(t, readAll(t, b, len(sent), 2048), sent, hostA)
	})
}

func TestGSOCoalescesEqualSizedRun(t *testing.T) {
	_, a, b := pair(t)
	if g, _ := a.Offloads(); !g {
		t.Skip("kernel has no UDP GSO")
	}
	sizes := []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 500}
	sent := outgoing(hostB, sizes)
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if a.tx.groups != 1 {
		t.Fatalf("10 datagrams went in %d sendmsg headers, want 1 with UDP_SEGMENT", a.tx.groups)
	}
	// The receiver (no GRO) still sees ten datagrams of the original sizes.
	checkReceived(t, readAll(t, b, len(sent), 2048), sent, hostA)
}

// withHeads gives each of msgs a Head of headLen bytes cut from the front
// of its Buf, as the udp backend sends a segment's rewritten headers
// before its payload, and returns the whole datagrams the receiver must
// see.
func withHeads(msgs []Message, headLen int) [][]byte {
	whole := make([][]byte, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		whole[i] = m.Buf[:m.N]
		h := min(headLen, m.N)
		m.Head, m.Buf, m.N = m.Buf[:h:h], m.Buf[h:], m.N-h
	}
	return whole
}

// TestHeadsGoBeforeTheirBufs sends datagrams gathered from a Head and a
// Buf each, with and without GSO: the receiver sees each Head followed
// by its Buf as one datagram, and with GSO a run of equal-sized ones
// (counted with their heads) still goes in one sendmsg.
func TestHeadsGoBeforeTheirBufs(t *testing.T) {
	bothWays(t, func(t *testing.T, a, b *Conn, gso bool) {
		sent := outgoing(hostB, []int{1472, 1472, 1472, 1472, 1472, 900})
		whole := withHeads(sent, 52)
		sent[1].Head, sent[1].Buf = nil, whole[1] // a message without a head joins the run
		sent[1].N = len(whole[1])
		if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		if want := map[bool]int{false: len(sent), true: 1}[gso]; a.tx.groups != want {
			t.Fatalf("%d sendmsg headers, want %d", a.tx.groups, want)
		}
		got := readAll(t, b, len(sent), 2048)
		for i := range got {
			if !bytes.Equal(got[i].Buf[:got[i].N], whole[i]) {
				t.Errorf("datagram %d: %d bytes, want the %d of its head and payload", i, got[i].N, len(whole[i]))
			}
		}
	})
}

func TestReadBatchReturnsSeveralReadyDatagrams(t *testing.T) {
	_, a, b := pair(t)
	sent := outgoing(hostB, []int{100, 200, 300, 400, 500, 600})
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	in := incoming(16, 2048)
	n, err := b.ReadBatch(in)
	if err != nil || n != len(sent) {
		t.Fatalf("ReadBatch = %d, %v; want all %d queued datagrams in one call", n, err, len(sent))
	}
	checkReceived(t, in[:n], sent, hostA)
}

func TestOversizedDatagramIsCountedNotDelivered(t *testing.T) {
	ns := pairNS(t)
	reg := metrics.NewRegistry()
	a, b := listenIn(t, ns, Config{Addr: hostA}), listenIn(t, ns, Config{Addr: hostB, Metrics: reg})
	sent := outgoing(hostB, []int{1000, 10})
	if n, err := a.WriteBatch(sent); n != 2 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := readAll(t, b, 2, 100)
	var exposed strings.Builder
	if _, err := reg.WriteTo(&exposed); err != nil {
		t.Fatal(err)
	}
	if got[0].N != 0 || got[1].N != 10 || !strings.Contains(exposed.String(), "flannelu_udp_truncated_datagrams_total 1\n") {
		t.Fatalf("N = %d, %d, metrics:\n%s\nwant 0, 10 and flannelu_udp_truncated_datagrams_total 1", got[0].N, got[1].N, exposed.String())
	}
}

func TestWriteBatchStopsAtInvalidMessage(t *testing.T) {
	_, a, b := pair(t)
	sent := outgoing(hostB, []int{10, 20, 30})
	sent[2].Addr = netip.MustParseAddrPort("[2001:db8::1]:8285")
	n, err := a.WriteBatch(sent)
	if n != 2 || err == nil {
		t.Fatalf("WriteBatch = %d, %v; want 2 and an error for the IPv6 destination", n, err)
	}
	checkReceived(t, readAll(t, b, 2, 2048), sent[:2], hostA)
	sent[0].N = 11 // beyond its Buf
	if n, err := a.WriteBatch(sent[:1]); n != 0 || err == nil {
		t.Fatalf("WriteBatch with N > len(Buf) = %d, %v", n, err)
	}
}

func TestOuterHeaderHasDFAndTTL64(t *testing.T) {
	ns, a, _ := pair(t)
	// A raw UDP socket sees each incoming datagram with its IP header.
	var fd int
	var err error
	ns.In(t, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP) })
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	if n, err := a.WriteBatch(outgoing(hostB, []int{42})); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("raw read: %v", err)
		}
		pkt := buf[:n]
		ihl := int(pkt[0]&0x0f) * 4
		if n < ihl+8 || pkt[ihl] != 8285>>8 || pkt[ihl+1] != 8285&0xff {
			continue // not ours
		}
		if pkt[6]&0x40 == 0 {
			t.Errorf("outer DF bit not set: flags/frag % x", pkt[6:8])
		}
		if pkt[8] != OuterTTL {
			t.Errorf("outer TTL %d, want %d", pkt[8], OuterTTL)
		}
		if dport := int(pkt[ihl+2])<<8 | int(pkt[ihl+3]); dport != 8285 {
			t.Errorf("destination port %d, want 8285", dport)
		}
		return
	}
}

func TestCloseUnblocksReadBatch(t *testing.T) {
	_, a, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := a.ReadBatch(incoming(4, 2048))
		done <- err
	}()
	if err := testbed.WaitParked("encap.TestCloseUnblocksReadBatch", waitLimit); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadBatch after Close returned %v, want net.ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not unblock ReadBatch")
	}
}

func TestReusePortSharesAddress(t *testing.T) {
	ns := testbed.Namespace(t, "encap")
	ns.IP(t, "addr", "add", "192.0.2.1/32", "dev", "lo")
	listenIn(t, ns, Config{Addr: hostA, ReusePort: true})
	listenIn(t, ns, Config{Addr: hostA, ReusePort: true})
	var err error
	ns.In(t, func() {
		var c *Conn
		if c, err = Listen(Config{Addr: hostA}); err == nil {
			c.Close()
		}
	})
	if err == nil {
		t.Fatal("a third socket without ReusePort bound the same address")
	}
}

func TestListenRejectsNoAddressAndNegativeBuffer(t *testing.T) {
	if _, err := Listen(Config{}); err == nil {
		t.Error("Listen accepted no address")
	}
	if _, err := Listen(Config{Addr: hostA, SocketBuffer: -1}); err == nil {
		t.Error("Listen accepted a negative socket buffer")
	}
}

func TestSocketBufferIsForcedAsRoot(t *testing.T) {
	ns := testbed.Namespace(t, "encap")
	ns.IP(t, "addr", "add", "192.0.2.1/32", "dev", "lo")
	c := listenIn(t, ns, Config{Addr: hostA}) // default 4 MiB, above the default rmem_max
	var got int
	var err error
	c.raw.Control(func(fd uintptr) { got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if err != nil {
		t.Fatal(err)
	}
	if got < DefaultSocketBuffer { // the kernel reports twice the request
		t.Fatalf("SO_RCVBUF = %d, want >= %d", got, DefaultSocketBuffer)
	}
}

func TestBatchesDoNotAllocate(t *testing.T) {
	_, a, b := pair(t)
	sent := outgoing(hostB, []int{1400, 1400, 1400, 1400, 1400, 1400, 1400, 100, 1400, 1400, 1400, 200})
	withHeads(sent[8:], 40) // segments sent from a header slot and a payload slice
	batchesAllocateNothing(t, a, b, sent)
}

// batchesAllocateNothing sends sent from a to b and reads it, over and
// over, and fails on any allocation.
func batchesAllocateNothing(t *testing.T, a, b *Conn, sent []Message) {
	t.Helper()
	in := incoming(len(sent), 2048)
	round := func() {
		if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		for got := 0; got < len(sent); {
			n, err := b.ReadBatch(in)
			if err != nil {
				t.Fatalf("ReadBatch: %v", err)
			}
			got += n
		}
	}
	round()
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Fatalf("WriteBatch+ReadBatch of %d allocated %.1f times per run, want 0", len(sent), allocs)
	}
}
