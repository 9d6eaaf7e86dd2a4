package trace

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/flannelu/flannelu/internal/drop"
)

var peer = netip.MustParseAddrPort("192.0.2.2:8285")

// clock is an injectable Now that the test advances by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestNewRejectsBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no output":     {},
		"small snaplen": {Out: io.Discard, Snaplen: 10},
		"huge snaplen":  {Out: io.Discard, Snaplen: 1 << 17},
		"neg burst":     {Out: io.Discard, Burst: -1},
		"neg slots":     {Out: io.Discard, Slots: -1},
		"huge slots":    {Out: io.Discard, Slots: 1 << 20},
	} {
		if tr, err := New(o); err == nil {
			tr.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestTracerWritesLinesInOrder(t *testing.T) {
	var out bytes.Buffer
	clk := &clock{t: at}
	tr, err := New(Options{Out: &out, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	tr.Packet(drop.Inside, tcpSYN(t), peer, Forwarded)
	clk.add(445 * time.Microsecond)
	tr.Packet(drop.Outside, echoReply(t), peer, Forwarded)
	clk.add(99 * time.Microsecond)
	tr.Packet(drop.Outside, dnsUDP(t), netip.MustParseAddrPort("203.0.113.9:8285"), drop.UnknownPeer.String())
	tr.Packet(drop.Outside, []byte{1, 2, 3}, netip.AddrPort{}, drop.Malformed.String())
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"12:04:05.123456 inside  TCP 198.18.1.2:43210 > 198.18.2.3:5201 [S] len=60 peer=192.0.2.2:8285 forwarded\n" +
		"12:04:05.123901 outside ICMP 198.18.2.3 > 198.18.1.2 echo-reply id=7 seq=1 len=84 peer=192.0.2.2:8285 forwarded\n" +
		"12:04:05.124000 outside UDP 198.18.9.9:53 > 198.18.1.2:999 len=40 peer=203.0.113.9:8285 dropped unknown_peer\n" +
		"12:04:05.124000 outside non-IPv4 version=0 len=3 dropped malformed\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestTracerCopiesPacket(t *testing.T) {
	var out bytes.Buffer
	tr, _ := New(Options{Out: &out, Now: func() time.Time { return at }})
	pkt := dnsUDP(t)
	tr.Packet(drop.Inside, pkt, peer, Forwarded)
	for i := range pkt { // the caller reuses its buffer at once
		pkt[i] = 0
	}
	tr.Close()
	if !strings.Contains(out.String(), "UDP 198.18.9.9:53 > 198.18.1.2:999") {
		t.Fatalf("the line shows the overwritten buffer, not the packet: %q", out.String())
	}
}

func TestRateLimitSuppressesAndReports(t *testing.T) {
	var out bytes.Buffer
	clk := &clock{t: at}
	tr, _ := New(Options{Out: &out, Rate: 2, Burst: 2, Now: clk.now})
	pkt := dnsUDP(t)
	for i := 0; i < 5; i++ { // 2 pass (the burst), 3 are suppressed
		tr.Packet(drop.Inside, pkt, peer, Forwarded)
	}
	clk.add(time.Second) // two tokens back
	tr.Packet(drop.Inside, pkt, peer, Forwarded)
	tr.Packet(drop.Inside, pkt, peer, Forwarded)
	tr.Packet(drop.Inside, pkt, peer, Forwarded) // suppressed, reported by Close
	tr.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var got []string
	for _, l := range lines {
		if strings.HasPrefix(l, "...") {
			got = append(got, l)
		} else {
			got = append(got, l[:15]) // the timestamp is enough here
		}
	}
	want := []string{
		"12:04:05.123456", "12:04:05.123456",
		"... 3 lines suppressed",
		"12:04:06.123456", "12:04:06.123456",
		"... 1 lines suppressed",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q\nwant %q\nfull output:\n%s", got, want, out.String())
	}
}

func TestPcapRoundTrip(t *testing.T) {
	var file bytes.Buffer
	clk := &clock{t: at}
	const snaplen = 100
	tr, err := New(Options{Pcap: &file, Snaplen: snaplen, Rate: 1, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	big := append(echoReply(t), make([]byte, 200)...) // longer than snaplen
	pkts := [][]byte{tcpSYN(t), echoReply(t), dnsUDP(t), {1, 2, 3}, big}
	var times []time.Time
	for i, p := range pkts {
		times = append(times, clk.now())
		if i%2 == 0 && len(p) <= snaplen {
			tr.Packet(drop.Outside, p, peer, Forwarded)
		} else { // in two pieces, as a split segment: the same record
			cut := min(20, len(p))
			tr.PacketParts(drop.Outside, p[:cut], p[cut:], peer, Forwarded)
		}
		clk.add(1500 * time.Microsecond)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(&file)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeRaw || r.Snaplen() != snaplen {
		t.Fatalf("link type %v snaplen %d, want raw %d", r.LinkType(), r.Snaplen(), snaplen)
	}
	for i, p := range pkts {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		want := p[:min(len(p), snaplen)]
		if !bytes.Equal(data, want) || ci.Length != len(p) || ci.CaptureLength != len(want) {
			t.Fatalf("packet %d: got %d/%d bytes, want %d/%d, equal=%v", i, ci.CaptureLength, ci.Length, len(want), len(p), bytes.Equal(data, want))
		}
		if !ci.Timestamp.Equal(times[i].Truncate(time.Microsecond)) {
			t.Fatalf("packet %d: timestamp %v, want %v", i, ci.Timestamp, times[i])
		}
	}
	if _, _, err := r.ReadPacketData(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last packet: %v, want EOF", err)
	}
}

// TestPcapTcpdumpReads checks the file with the tool people will use.
func TestPcapTcpdumpReads(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Skip("tcpdump not installed")
	}
	path := filepath.Join(t.TempDir(), "trace.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := New(Options{Pcap: f})
	tr.Packet(drop.Inside, tcpSYN(t), peer, Forwarded)
	tr.Packet(drop.Outside, echoReply(t), peer, Forwarded)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(tcpdump, "-nr", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -nr: %v\n%s", err, out)
	}
	for _, want := range []string{
		"IP 198.18.1.2.43210 > 198.18.2.3.5201: Flags [S]",
		"IP 198.18.2.3 > 198.18.1.2: ICMP echo reply, id 7, seq 1, length 64",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tcpdump output lacks %q:\n%s", want, out)
		}
	}
}

func TestPacketAfterCloseIsSafe(t *testing.T) {
	var out bytes.Buffer
	tr, _ := New(Options{Out: &out})
	tr.Packet(drop.Inside, dnsUDP(t), peer, Forwarded)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	n := out.Len()
	tr.Packet(drop.Inside, dnsUDP(t), peer, Forwarded)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if out.Len() != n || n == 0 {
		t.Fatalf("output %d bytes before, %d after a Packet on a closed tracer", n, out.Len())
	}
}

// TestConcurrentPacketAndClose: several forwarder goroutines trace while
// Close runs; nothing panics or races, and every line is whole.
func TestConcurrentPacketAndClose(t *testing.T) {
	var out bytes.Buffer
	tr, _ := New(Options{Out: &out, Rate: -1, Slots: 64})
	pkt := dnsUDP(t)
	var wg sync.WaitGroup
	var traced atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				tr.Packet(drop.Outside, pkt, peer, Forwarded)
				traced.Add(1)
			}
		}()
	}
	for traced.Load() < 1000 { // Close while the goroutines are tracing
		runtime.Gosched()
	}
	tr.Close()
	wg.Wait()
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if l != "" && !strings.HasSuffix(l, " UDP 198.18.9.9:53 > 198.18.1.2:999 len=40 peer=192.0.2.2:8285 forwarded") {
			t.Fatalf("broken line %q", l)
		}
	}
}

// blockingWriter blocks every Write until release is closed, and says
// when the first Write started.
type blockingWriter struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(p), nil
}

func TestRingFullCountsDropped(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	tr, _ := New(Options{Out: w, Rate: -1, Slots: 4})
	pkt := dnsUDP(t)
	tr.Packet(drop.Inside, pkt, peer, Forwarded)
	<-w.entered // the writer is stuck flushing; its slot is already free
	for i := 0; i < 100; i++ {
		tr.Packet(drop.Inside, pkt, peer, Forwarded)
	}
	if d := tr.Dropped(); d != 96 {
		t.Errorf("Dropped = %d, want 96 (100 packets, 4 free slots)", d)
	}
	close(w.release)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorReturnedByClose(t *testing.T) {
	var file bytes.Buffer
	tr, _ := New(Options{Out: failWriter{}, Pcap: &file})
	tr.Packet(drop.Inside, dnsUDP(t), peer, Forwarded)
	err := tr.Close()
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close = %v, want the line writer's error", err)
	}
	r, _ := pcapgo.NewReader(&file)
	if _, _, err := r.ReadPacketData(); err != nil {
		t.Fatalf("pcap stopped with the line writer: %v", err)
	}
}

func TestPacketZeroAllocs(t *testing.T) {
	tr, _ := New(Options{Out: io.Discard, Pcap: io.Discard, Rate: -1})
	defer tr.Close()
	pkts := [][]byte{tcpSYN(t), echoReply(t), dnsUDP(t)}
	i := 0
	// This counts the writer goroutine's allocations too: it decodes and
	// writes these packets at the same time.
	allocs := testing.AllocsPerRun(3000, func() {
		tr.Packet(drop.Outside, pkts[i%3], peer, Forwarded)
		i++
	})
	if allocs != 0 {
		t.Fatalf("Packet allocates %.2f times per call, want 0", allocs)
	}
}

// TestDefaultClock: without an injected clock, packets carry the current
// wall-clock time, in order.
func TestDefaultClock(t *testing.T) {
	var file bytes.Buffer
	before := time.Now()
	tr, _ := New(Options{Pcap: &file})
	tr.Packet(drop.Inside, dnsUDP(t), peer, Forwarded)
	// The input, not a wait: real time passes between the packets, and
	// their stamps must show at least that much (stamped at Packet, not
	// when the writer gets to them). Load only makes the gap longer.
	time.Sleep(2 * time.Millisecond)
	tr.Packet(drop.Inside, dnsUDP(t), peer, Forwarded)
	tr.Close()
	after := time.Now()
	r, _ := pcapgo.NewReader(&file)
	_, ci1, err1 := r.ReadPacketData()
	_, ci2, err2 := r.ReadPacketData()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if ci1.Timestamp.Before(before.Truncate(time.Microsecond)) || ci2.Timestamp.After(after) {
		t.Fatalf("timestamps %v %v outside [%v, %v]", ci1.Timestamp, ci2.Timestamp, before, after)
	}
	if d := ci2.Timestamp.Sub(ci1.Timestamp); d < 2*time.Millisecond {
		t.Fatalf("second packet only %v after the first, want >= 2ms", d)
	}
}
