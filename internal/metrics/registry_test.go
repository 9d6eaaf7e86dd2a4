package metrics

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func scrape(t *testing.T, r *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestExposition registers every kind of family out of name order, with
// label values that need escaping, and compares the whole text.
func TestExposition(t *testing.T) {
	r := NewRegistry()
	drops := r.CounterVec("x_dropped_total", "Dropped, by direction and reason.", "direction", "reason")
	drops.With("outside", "unknown_peer").Add(3)
	drops.With("inside", "no_route").Inc()
	drops.Func(func() uint64 { return 7 }, "inside", "malformed")
	r.Counter("x_a_total", `Help with a backslash \ and a`+"\nnewline.").Add(2)
	r.CounterFunc("x_b_total", "Read at scrape time.", func() uint64 { return 1 << 63 })
	r.Gauge("x_up", "A gauge.").Set(1.5)
	r.GaugeFunc("x_inf", "Infinite.", func() float64 { return math.Inf(1) })
	odd := r.CounterVec("x_odd_total", "Odd label values.", "v")
	odd.With(`quote " backslash \ newline` + "\n").Inc()
	odd.With("bad \xff utf8").Inc()
	r.CounterVec("x_empty_total", "No series yet: not written.", "reason")

	want := `# HELP x_a_total Help with a backslash \\ and a\nnewline.
# TYPE x_a_total counter
x_a_total 2
# HELP x_b_total Read at scrape time.
# TYPE x_b_total counter
x_b_total 9223372036854775808
# HELP x_dropped_total Dropped, by direction and reason.
# TYPE x_dropped_total counter
x_dropped_total{direction="inside",reason="malformed"} 7
x_dropped_total{direction="inside",reason="no_route"} 1
x_dropped_total{direction="outside",reason="unknown_peer"} 3
# HELP x_inf Infinite.
# TYPE x_inf gauge
x_inf +Inf
# HELP x_odd_total Odd label values.
# TYPE x_odd_total counter
x_odd_total{v="bad ` + "\uFFFD" + ` utf8"} 1
x_odd_total{v="quote \" backslash \\ newline\n"} 1
# HELP x_up A gauge.
# TYPE x_up gauge
x_up 1.5
`
	if got := scrape(t, r); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// Stable: the same registry writes the same bytes again.
	if again := scrape(t, r); again != want {
		t.Fatalf("second scrape differs:\n%s", again)
	}
}

func TestSameNameSharesCounter(t *testing.T) {
	r := NewRegistry()
	a := r.Counter("x_truncated_total", "Truncated.")
	b := r.Counter("x_truncated_total", "Truncated.")
	if a != b {
		t.Fatal("two registrations of one counter gave two counters")
	}
	v := r.CounterVec("x_v_total", "V.", "l")
	if v.With("a") != r.CounterVec("x_v_total", "V.", "l").With("a") {
		t.Fatal("With on the same labels gave two counters")
	}
	a.Add(2)
	b.Add(3)
	if !strings.Contains(scrape(t, r), "\nx_truncated_total 5\n") {
		t.Fatalf("shared counter not summed:\n%s", scrape(t, r))
	}
}

func TestRegistrationMistakesPanic(t *testing.T) {
	for name, fn := range map[string]func(r *Registry){
		"counter without _total":   func(r *Registry) { r.Counter("x_count", "Help.") },
		"no help":                  func(r *Registry) { r.Counter("x_total", "") },
		"bad name":                 func(r *Registry) { r.Gauge("x-y", "Help.") },
		"bad label":                func(r *Registry) { r.CounterVec("x_total", "Help.", "a-b") },
		"reserved label":           func(r *Registry) { r.CounterVec("x_total", "Help.", "__a") },
		"repeated label":           func(r *Registry) { r.CounterVec("x_total", "Help.", "a", "a") },
		"vec without labels":       func(r *Registry) { r.CounterVec("x_total", "Help.") },
		"wrong value count":        func(r *Registry) { r.CounterVec("x_total", "Help.", "a", "b").With("1") },
		"other help":               func(r *Registry) { r.Counter("x_total", "Help."); r.Counter("x_total", "Other.") },
		"other type":               func(r *Registry) { r.Counter("x_total", "Help."); r.GaugeFunc("x_total", "Help.", nil) },
		"other labels":             func(r *Registry) { r.Counter("x_total", "Help."); r.CounterVec("x_total", "Help.", "a") },
		"func twice":               func(r *Registry) { r.CounterFunc("x_total", "H.", nil); r.CounterFunc("x_total", "H.", nil) },
		"counter after func":       func(r *Registry) { r.CounterFunc("x_total", "H.", nil); r.Counter("x_total", "H.") },
		"labelled func after With": func(r *Registry) { v := r.CounterVec("x_total", "H.", "a"); v.With("1"); v.Func(nil, "1") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			fn(NewRegistry())
		})
	}
}

// TestNilRegistry: parts constructed without a registry still count.
func TestNilRegistry(t *testing.T) {
	var r *Registry
	c := r.Counter("x_total", "Help.")
	c.Add(4)
	v := r.CounterVec("x_v_total", "Help.", "a")
	v.With("1").Inc()
	v.Func(func() uint64 { return 1 }, "2")
	r.CounterFunc("x_f_total", "Help.", func() uint64 { return 1 })
	r.Gauge("x_g", "Help.").Set(1)
	if c.Value() != 4 || v.With("1").Value() != 1 {
		t.Fatal("counters of a nil registry do not count")
	}
	if s := scrape(t, r); s != "" {
		t.Fatalf("nil registry wrote %q", s)
	}
}

func TestServeHTTP(t *testing.T) {
	r := NewRegistry()
	r.Counter("x_total", "Help.").Inc()
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		t.Errorf("Content-Type %q", ct)
	}
	if body := rec.Body.String(); body != "# HELP x_total Help.\n# TYPE x_total counter\nx_total 1\n" {
		t.Errorf("body %q", body)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteToReportsWriteError(t *testing.T) {
	r := NewRegistry()
	r.Counter("x_total", "Help.")
	if _, err := r.WriteTo(failWriter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the writer's error", err)
	}
}

func TestGauge(t *testing.T) {
	var g Gauge
	g.Set(2)
	g.Add(-0.5)
	if g.Value() != 1.5 {
		t.Fatalf("gauge = %v", g.Value())
	}
}

func TestCounterPadded(t *testing.T) {
	if s := unsafe.Sizeof(Counter{}); s < 64 {
		t.Fatalf("Counter is %d bytes, smaller than a cache line", s)
	}
}

// TestConcurrent counts, registers and scrapes at once (run with -race).
func TestConcurrent(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("x_total", "Help.")
	v := r.CounterVec("x_v_total", "Help.", "n")
	const goroutines, per = 4, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			mine := v.With(string(rune('a' + g)))
			for range per {
				c.Inc()
				mine.Inc()
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if _, err := r.WriteTo(io.Discard); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if c.Value() != goroutines*per {
		t.Fatalf("counted %d, want %d", c.Value(), goroutines*per)
	}
	if !strings.Contains(scrape(t, r), "\nx_v_total{n=\"d\"} 2000\n") {
		t.Fatalf("labelled counter missing:\n%s", scrape(t, r))
	}
}

func TestCountingAllocatesNothing(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("x_total", "Help.")
	v := r.CounterVec("x_v_total", "Help.", "a").With("1")
	g := r.Gauge("x", "Help.")
	if n := testing.AllocsPerRun(1000, func() { c.Inc(); v.Add(2); g.Add(1) }); n != 0 {
		t.Fatalf("counting: %v allocs, want 0", n)
	}
}

// TestScrapeAllocatesNothing: the rendering buffer is reused, so a scrape
// of a registry the size of the daemon's allocates nothing once warm.
func TestScrapeAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector empties sync.Pool at random")
	}
	r := daemonSized()
	r.WriteTo(io.Discard)                                                         //nolint:errcheck // warms the buffer pool
	if n := testing.AllocsPerRun(100, func() { r.WriteTo(io.Discard) }); n != 0 { //nolint:errcheck // io.Discard
		t.Fatalf("scrape: %v allocs, want 0", n)
	}
}

// daemonSized is a registry shaped like the udp daemon's: a 2x10 and two
// 2x1 labelled families read from funcs, and a few plain counters.
func daemonSized() *Registry {
	r := NewRegistry()
	var n uint64 = 12345
	read := func() uint64 { return n }
	drops := r.CounterVec("flannelu_dropped_packets_total", "Dropped packets.", "direction", "reason")
	fwd := r.CounterVec("flannelu_forwarded_packets_total", "Forwarded packets.", "direction")
	bytes := r.CounterVec("flannelu_forwarded_bytes_total", "Forwarded bytes.", "direction")
	for _, d := range []string{"inside", "outside"} {
		for _, reason := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
			drops.Func(read, d, reason)
		}
		fwd.Func(read, d)
		bytes.Func(read, d)
	}
	for _, name := range []string{"flannelu_a_total", "flannelu_b_total", "flannelu_c_total", "flannelu_d_total"} {
		r.CounterFunc(name, "A count.", read)
	}
	r.Counter("flannelu_e_total", "A count.").Add(3)
	return r
}

func BenchmarkScrape(b *testing.B) {
	r := daemonSized()
	b.ReportAllocs()
	for b.Loop() {
		r.WriteTo(io.Discard) //nolint:errcheck // io.Discard
	}
}

func BenchmarkCounterAdd(b *testing.B) {
	c := NewRegistry().Counter("x_total", "Help.")
	b.ReportAllocs()
	for b.Loop() {
		c.Add(1)
	}
}
