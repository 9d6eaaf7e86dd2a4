package drop

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/flannelu/flannelu/internal/metrics"
)

func TestReasonLabelsUniqueSnakeCase(t *testing.T) {
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	seen := map[string]Reason{}
	for r := Reason(0); int(r) < NumReasons; r++ {
		l := r.String()
		if !snake.MatchString(l) || l == "unknown" {
			t.Errorf("reason %d: label %q is not a snake_case label", r, l)
		}
		if prev, dup := seen[l]; dup {
			t.Errorf("reasons %d and %d share label %q", prev, r, l)
		}
		seen[l] = r
	}
	for _, want := range []string{"no_route", "unknown_peer", "malformed", "not_our_subnet", "ttl_expired", "too_big", "write_error"} {
		if _, ok := seen[want]; !ok {
			t.Errorf("label %q missing", want)
		}
	}
	if got := Reason(NumReasons).String(); got != "unknown" {
		t.Errorf("out-of-range reason label %q", got)
	}
	if Inside.String() != "inside" || Outside.String() != "outside" || Direction(NumDirections).String() != "unknown" {
		t.Error("direction labels wrong")
	}
}

func TestAddGet(t *testing.T) {
	var c Counters
	c.Add(Outside, UnknownPeer, 3)
	c.Add(Outside, UnknownPeer, 2)
	c.Add(Inside, NoRoute, 1)
	if got := c.Get(Outside, UnknownPeer); got != 5 {
		t.Fatalf("outside/unknown_peer = %d, want 5", got)
	}
	if got := c.Get(Inside, UnknownPeer); got != 0 {
		t.Fatalf("inside/unknown_peer = %d, want 0 (directions are separate)", got)
	}
	// Out-of-range values neither panic nor land in a real counter.
	c.Add(Direction(7), NoRoute, 100)
	c.Add(Inside, Reason(200), 100)
	c.AddForwarded(Direction(9), 1, 1)
	if c.Get(Inside, NoRoute) != 1 || c.Get(Direction(7), NoRoute) != 0 || c.Get(Inside, Reason(200)) != 0 {
		t.Fatal("out-of-range Add changed a counter")
	}
	c.AddForwarded(Inside, 2, 168)
	if p, b := c.Forwarded(Inside); p != 2 || b != 168 {
		t.Fatalf("forwarded inside = %d pkts %d bytes", p, b)
	}
}

func TestCountersPadded(t *testing.T) {
	if s := unsafe.Sizeof(counter{}); s < 64 {
		t.Fatalf("counter is %d bytes, smaller than a cache line", s)
	}
	var c Counters
	a := uintptr(unsafe.Pointer(&c.dropped[Inside][NoRoute]))
	b := uintptr(unsafe.Pointer(&c.dropped[Inside][UnknownPeer]))
	if b-a < 64 {
		t.Fatalf("adjacent counters %d bytes apart", b-a)
	}
}

func TestConcurrentAdd(t *testing.T) {
	var c Counters
	const goroutines, per = 8, 5000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			dir := Direction(g % NumDirections)
			for range per {
				c.Add(dir, TTLExpired, 1)
				c.AddForwarded(dir, 1, 100)
			}
		})
	}
	// A scraper runs alongside the writers (for -race).
	reg := metrics.NewRegistry()
	c.Register(reg)
	wg.Go(func() {
		for range 100 {
			if _, err := reg.WriteTo(io.Discard); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	for d := range numDirections {
		if got := c.Get(d, TTLExpired); got != goroutines/2*per {
			t.Errorf("%v ttl_expired = %d, want %d", d, got, goroutines/2*per)
		}
		if p, b := c.Forwarded(d); p != goroutines/2*per || b != 100*p {
			t.Errorf("%v forwarded = %d pkts %d bytes", d, p, b)
		}
	}
}

func TestRegisterExact(t *testing.T) {
	var c Counters
	c.Add(Outside, UnknownPeer, 3)
	c.Add(Inside, NoRoute, 12)
	c.Add(Inside, TooBig, 1)
	c.AddForwarded(Inside, 10, 840)
	c.AddForwarded(Outside, 7, 588)
	reg := metrics.NewRegistry()
	c.Register(reg)
	var buf bytes.Buffer
	if _, err := reg.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	want := `# HELP flannelu_dropped_packets_total Packets the udp backend's forwarder dropped, by direction (inside: TUN to UDP, outside: UDP to TUN) and reason.
# TYPE flannelu_dropped_packets_total counter
flannelu_dropped_packets_total{direction="inside",reason="malformed"} 0
flannelu_dropped_packets_total{direction="inside",reason="no_route"} 12
flannelu_dropped_packets_total{direction="inside",reason="not_ipv4"} 0
flannelu_dropped_packets_total{direction="inside",reason="not_our_subnet"} 0
flannelu_dropped_packets_total{direction="inside",reason="spoofed_source"} 0
flannelu_dropped_packets_total{direction="inside",reason="too_big"} 1
flannelu_dropped_packets_total{direction="inside",reason="ttl_expired"} 0
flannelu_dropped_packets_total{direction="inside",reason="unknown_peer"} 0
flannelu_dropped_packets_total{direction="inside",reason="write_error"} 0
flannelu_dropped_packets_total{direction="outside",reason="malformed"} 0
flannelu_dropped_packets_total{direction="outside",reason="no_route"} 0
flannelu_dropped_packets_total{direction="outside",reason="not_ipv4"} 0
flannelu_dropped_packets_total{direction="outside",reason="not_our_subnet"} 0
flannelu_dropped_packets_total{direction="outside",reason="spoofed_source"} 0
flannelu_dropped_packets_total{direction="outside",reason="too_big"} 0
flannelu_dropped_packets_total{direction="outside",reason="ttl_expired"} 0
flannelu_dropped_packets_total{direction="outside",reason="unknown_peer"} 3
flannelu_dropped_packets_total{direction="outside",reason="write_error"} 0
# HELP flannelu_forwarded_bytes_total Bytes of inner IPv4 packets the udp backend's forwarder forwarded, by direction.
# TYPE flannelu_forwarded_bytes_total counter
flannelu_forwarded_bytes_total{direction="inside"} 840
flannelu_forwarded_bytes_total{direction="outside"} 588
# HELP flannelu_forwarded_packets_total Packets the udp backend's forwarder forwarded, by direction (inside: TUN to UDP, outside: UDP to TUN).
# TYPE flannelu_forwarded_packets_total counter
flannelu_forwarded_packets_total{direction="inside"} 10
flannelu_forwarded_packets_total{direction="outside"} 7
`
	if got := buf.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestREADMEListsCountedReasons: the README's list of reasons names
// exactly the reasons the forwarder counts, so it advertises no label that
// stays 0 forever.
func TestREADMEListsCountedReasons(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(readme), "The `reason` label of `flannelu_dropped_packets_total`:\n\n")
	if !ok {
		t.Fatal("README has no list of the reason label's values")
	}
	list, _, _ = strings.Cut(list, "\n\n")
	var got, want []string
	for _, m := range regexp.MustCompile("(?m)^- `([a-z_0-9]+)`").FindAllStringSubmatch(list, -1) {
		got = append(got, m[1])
	}
	for r := Reason(0); int(r) < NumReasons; r++ {
		if r.counted() {
			want = append(want, r.String())
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("README lists reasons %v, the code counts %v", got, want)
	}
}

func TestAddAllocatesNothing(t *testing.T) {
	var c Counters
	allocs := testing.AllocsPerRun(1000, func() {
		c.Add(Outside, Malformed, 1)
		c.AddForwarded(Inside, 1, 1400)
	})
	if allocs != 0 {
		t.Fatalf("Add: %v allocs, want 0", allocs)
	}
	if c.Get(Outside, Malformed) < 1000 {
		t.Fatal("Add did not count")
	}
}

// BenchmarkAddParallel measures Add with one goroutine per direction, the
// forwarder's layout.
func BenchmarkAddParallel(b *testing.B) {
	var c Counters
	b.ReportAllocs()
	var next uint32
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		dir := Direction(next % uint32(NumDirections))
		next++
		mu.Unlock()
		for pb.Next() {
			c.Add(dir, NoRoute, 1)
			c.AddForwarded(dir, 1, 100)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
}

func BenchmarkAdd(b *testing.B) {
	var c Counters
	b.ReportAllocs()
	for b.Loop() {
		c.Add(Inside, NoRoute, 1)
	}
}
