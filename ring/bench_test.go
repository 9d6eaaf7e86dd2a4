package ring

import (
	"context"
	"runtime"
	"testing"
)

const benchCap = 1024

// reportRate adds items/s, the number the forwarder cares about.
func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkSPSCThroughput streams b.N items from one goroutine to another
// with the blocking calls (they park when full or empty).
func BenchmarkSPSCThroughput(b *testing.B) {
	q := NewSPSC[uint64](benchCap)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		ctx := context.Background()
		for i := 0; i < b.N; i++ {
			_ = q.Push(ctx, uint64(i))
		}
		q.Close()
	}()
	var sum uint64
	for {
		v, ok := q.Pop()
		if !ok {
			break
		}
		sum += v
	}
	reportRate(b)
	if want := uint64(b.N) * uint64(b.N-1) / 2; sum != want {
		b.Fatalf("sum %d, want %d", sum, want)
	}
}

// BenchmarkSPSCThroughputSpin is the same transfer with TryPush/TryPop and
// a yield when full or empty, the pattern of a busy forwarder.
func BenchmarkSPSCThroughputSpin(b *testing.B) {
	q := NewSPSC[uint64](benchCap)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; {
			if q.TryPush(uint64(i)) {
				i++
			} else {
				runtime.Gosched()
			}
		}
	}()
	for n := 0; n < b.N; {
		if _, ok := q.TryPop(); ok {
			n++
		} else {
			runtime.Gosched()
		}
	}
	reportRate(b)
}

// BenchmarkChanThroughput is the baseline: a buffered channel of the same
// capacity.
func BenchmarkChanThroughput(b *testing.B) {
	c := make(chan uint64, benchCap)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			c <- uint64(i)
		}
		close(c)
	}()
	var sum uint64
	for v := range c {
		sum += v
	}
	reportRate(b)
	if want := uint64(b.N) * uint64(b.N-1) / 2; sum != want {
		b.Fatalf("sum %d, want %d", sum, want)
	}
}

// BenchmarkMPMCThroughput: one producer, one consumer through MPMC, to
// show what the compare-and-swap costs against SPSC.
func BenchmarkMPMCThroughput(b *testing.B) {
	q := NewMPMC[uint64](benchCap)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; {
			if q.TryPush(uint64(i)) {
				i++
			} else {
				runtime.Gosched()
			}
		}
		q.Close()
	}()
	for {
		if _, ok := q.Pop(); !ok {
			break
		}
	}
	reportRate(b)
}

// BenchmarkSPSCPingPong measures a round trip: each side waits for the
// other's item before sending the next (latency, both parked often).
func BenchmarkSPSCPingPong(b *testing.B) {
	ping, pong := NewSPSC[int](benchCap), NewSPSC[int](benchCap)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for {
			v, ok := ping.Pop()
			if !ok {
				return
			}
			pong.TryPush(v)
		}
	}()
	for i := 0; i < b.N; i++ {
		ping.TryPush(i)
		pong.Pop()
	}
	ping.Close()
	reportRate(b)
}

func BenchmarkChanPingPong(b *testing.B) {
	ping, pong := make(chan int, benchCap), make(chan int, benchCap)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	for i := 0; i < b.N; i++ {
		ping <- i
		<-pong
	}
	close(ping)
	reportRate(b)
}

// BenchmarkSPSCUncontended: push then pop on one goroutine, the raw cost
// of the two operations.
func BenchmarkSPSCUncontended(b *testing.B) {
	q := NewSPSC[uint64](benchCap)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.TryPush(uint64(i))
		q.TryPop()
	}
	reportRate(b)
}

func BenchmarkMPMCUncontended(b *testing.B) {
	q := NewMPMC[uint64](benchCap)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.TryPush(uint64(i))
		q.TryPop()
	}
	reportRate(b)
}
