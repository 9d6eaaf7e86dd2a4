package tun

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// The TUN loop: a packet written into the device for another overlay
// address is forwarded by the namespace's kernel straight back out of the
// device, so Write followed by Read moves it through the kernel and back.
var (
	loopSrc = netip.MustParseAddrPort("198.18.5.5:7000")
	loopDst = netip.MustParseAddrPort("198.18.9.9:7001")
)

// loopBatch returns n copies of a loop packet with 64 payload bytes, each
// behind offset bytes of headroom.
func loopBatch(n, offset int) [][]byte {
	pkt := ipv4UDP(loopSrc, loopDst, 64, make([]byte, 64))
	out := make([][]byte, n)
	for i := range out {
		out[i] = append(make([]byte, offset, offset+len(pkt)), pkt...)
	}
	return out
}

// roundTrip writes out and reads until as many packets came back.
func roundTrip(tb testing.TB, q *Queue, out, in [][]byte, sizes []int) {
	if n, err := q.Write(out, headroom); n != len(out) || err != nil {
		tb.Fatalf("Write = %d, %v", n, err)
	}
	for got := 0; got < len(out); {
		n, err := q.Read(in, sizes, headroom)
		if err != nil {
			tb.Fatalf("Read: %v", err)
		}
		got += n
	}
}

// roundTripWaiting is roundTrip with the forwarder's wait: when nothing is
// ready it polls the queue's descriptor instead of reading again.
func roundTripWaiting(tb testing.TB, q *Queue, out, in [][]byte, sizes []int) {
	if n, err := q.Write(out, headroom); n != len(out) || err != nil {
		tb.Fatalf("Write = %d, %v", n, err)
	}
	for got := 0; got < len(out); {
		n, err := q.Read(in, sizes, headroom)
		if err != nil {
			tb.Fatalf("Read: %v", err)
		}
		got += n
		if n == 0 {
			q.Hold(func(fd, _ int) { //nolint:errcheck // a closed queue fails the next Read
				fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				unix.Poll(fds[:], 1000) //nolint:errcheck // the next Read says
			})
		}
	}
}

func TestLoopCarriesPacketBack(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	in, sizes := makeBufs(4)
	roundTrip(t, dev.Queues()[0], loopBatch(1, headroom), in, sizes)
	pkt := in[0][headroom : headroom+sizes[0]]
	udpPayload(t, pkt, loopSrc, loopDst)
	if pkt[8] != 63 {
		t.Fatalf("looped packet TTL %d, want 63 (one forwarding hop)", pkt[8])
	}
}

func TestReadWriteDoNotAllocate(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	q := dev.Queues()[0]
	out := loopBatch(8, headroom)
	in, sizes := makeBufs(8)
	roundTrip(t, q, out, in, sizes) // warm up the poller
	allocs := testing.AllocsPerRun(200, func() { roundTrip(t, q, out, in, sizes) })
	if allocs != 0 {
		t.Fatalf("Write+Read of 8 packets allocated %.1f times per run, want 0", allocs)
	}
}

func TestWritePartsDoesNotAllocate(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	q := dev.Queues()[0]
	pkts := make([][][]byte, 8)
	for i, p := range loopBatch(8, 0) {
		pkts[i] = [][]byte{p[:20], p[20:28], p[28:]}
	}
	in, sizes := makeBufs(8)
	cycle := func() {
		if n, err := q.WriteParts(pkts); n != len(pkts) || err != nil {
			t.Fatalf("WriteParts = %d, %v", n, err)
		}
		for got := 0; got < len(pkts); {
			n, err := q.Read(in, sizes, headroom)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			got += n
		}
	}
	cycle() // warm up the poller
	if allocs := testing.AllocsPerRun(200, cycle); allocs != 0 {
		t.Fatalf("WriteParts+Read of 8 packets allocated %.1f times per run, want 0", allocs)
	}
}

func BenchmarkLoop(b *testing.B) {
	for _, batch := range []int{1, 8, 64} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			_, dev := openConfigured(b, Config{Name: "flu0"})
			q := dev.Queues()[0]
			out := loopBatch(batch, headroom)
			in, sizes := makeBufs(batch)
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				roundTripWaiting(b, q, out, in, sizes)
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "pkts/s")
		})
	}
}

// BenchmarkLoopWater is the same loop through github.com/songgao/water, one
// packet per Read/Write call (water has no batching and no IFF_VNET_HDR).
func BenchmarkLoopWater(b *testing.B) {
	ns := testbed.Namespace(b, "tun")
	var ifce *water.Interface
	var err error
	ns.In(b, func() {
		ifce, err = water.New(water.Config{DeviceType: water.TUN,
			PlatformSpecificParams: water.PlatformSpecificParams{Name: "flu0"}})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ifce.Close() })
	configure(b, ns, ifce.Name())
	pkt := loopBatch(1, 0)[0]
	in := make([]byte, 2048)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := ifce.Write(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := ifce.Read(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pkts/s")
}
