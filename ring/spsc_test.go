package ring

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestSPSCCapacityRoundsUp(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, 1}, {1, 1}, {3, 4}, {8, 8}, {1000, 1024}} {
		if got := NewSPSC[int](c.in).Cap(); got != c.want {
			t.Errorf("NewSPSC(%d).Cap() = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestSPSCFIFOFullEmptyWraparound(t *testing.T) {
	q := NewSPSC[int](4)
	if _, ok := q.TryPop(); ok {
		t.Fatal("TryPop on a new queue succeeded")
	}
	next, want := 0, 0
	// 10 laps of fill-to-full then drain-to-empty, plus a half-full phase,
	// so the indices wrap the 4-slot buffer many times.
	for lap := 0; lap < 10; lap++ {
		for i := 0; i < 4; i++ {
			if !q.TryPush(next) {
				t.Fatalf("lap %d: TryPush %d failed with Len %d", lap, next, q.Len())
			}
			next++
		}
		if q.TryPush(-1) {
			t.Fatalf("lap %d: TryPush into a full queue succeeded", lap)
		}
		if q.Len() != 4 {
			t.Fatalf("lap %d: Len = %d on a full queue", lap, q.Len())
		}
		for i := 0; i < 4; i++ {
			v, ok := q.TryPop()
			if !ok || v != want {
				t.Fatalf("lap %d: TryPop = %d,%v want %d,true", lap, v, ok, want)
			}
			want++
		}
		if _, ok := q.TryPop(); ok {
			t.Fatalf("lap %d: TryPop on an empty queue succeeded", lap)
		}
		// Offset the indices by a partial lap.
		q.TryPush(next)
		next++
		if v, _ := q.TryPop(); v != want {
			t.Fatalf("lap %d: got %d want %d", lap, v, want)
		}
		want++
	}
}

func TestSPSCPopZeroesSlot(t *testing.T) {
	q := NewSPSC[*int](2)
	x := 1
	q.TryPush(&x)
	q.TryPop()
	if q.buf[0] != nil {
		t.Fatal("popped slot still references the value (keeps it alive for the GC)")
	}
}

// TestSPSCConcurrentMillion moves 1e6 values between two goroutines using
// the non-blocking calls on a small ring, so both full and empty are hit
// constantly, and checks order, count and sum.
func TestSPSCConcurrentMillion(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	q := NewSPSC[uint64](64)
	go func() {
		for i := 1; i <= n; {
			if q.TryPush(uint64(i)) {
				i++
			} else {
				runtime.Gosched()
			}
		}
	}()
	var sum uint64
	for want := uint64(1); want <= uint64(n); {
		v, ok := q.TryPop()
		if !ok {
			runtime.Gosched()
			continue
		}
		if v != want {
			t.Fatalf("got %d, want %d: order broken or value lost/duplicated", v, want)
		}
		sum += v
		want++
	}
	if wantSum := uint64(n) * uint64(n+1) / 2; sum != wantSum {
		t.Fatalf("checksum %d, want %d", sum, wantSum)
	}
}

// TestSPSCBlockingPushPop runs the same transfer with the parking calls,
// on a ring small enough that both sides park, and ends with Close.
func TestSPSCBlockingPushPop(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	q := NewSPSC[uint64](8)
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if err := q.Push(ctx, uint64(i)); err != nil {
				errc <- err
				return
			}
		}
		q.Close()
		errc <- nil
	}()
	var sum, count uint64
	want := uint64(1)
	for {
		v, ok := q.Pop()
		if !ok {
			break
		}
		if v != want {
			t.Fatalf("got %d, want %d", v, want)
		}
		want++
		sum += v
		count++
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if count != uint64(n) || sum != uint64(n)*uint64(n+1)/2 {
		t.Fatalf("received %d values sum %d, want %d values", count, sum, n)
	}
}

func TestSPSCCloseReleasesBlockedPop(t *testing.T) {
	q := NewSPSC[int](4)
	done := make(chan bool)
	go func() {
		_, ok := q.Pop()
		done <- ok
	}()
	select {
	case <-done:
		t.Fatal("Pop returned from an empty open queue")
	case <-time.After(20 * time.Millisecond):
	}
	q.Close()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("Pop after Close on an empty queue returned ok")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release a blocked Pop")
	}
}

func TestSPSCCloseDrainsThenStops(t *testing.T) {
	q := NewSPSC[int](4)
	q.TryPush(1)
	q.TryPush(2)
	q.Close()
	for _, want := range []int{1, 2} {
		if v, ok := q.Pop(); !ok || v != want {
			t.Fatalf("Pop = %d,%v want %d,true", v, ok, want)
		}
	}
	if _, ok := q.Pop(); ok {
		t.Fatal("Pop on a closed drained queue returned ok")
	}
}

func TestSPSCCloseReleasesBlockedPush(t *testing.T) {
	q := NewSPSC[int](1)
	q.TryPush(1)
	errc := make(chan error)
	go func() { errc <- q.Push(context.Background(), 2) }()
	time.Sleep(20 * time.Millisecond)
	q.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Push on closed full queue = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release a blocked Push")
	}
}

func TestSPSCContextCancel(t *testing.T) {
	q := NewSPSC[int](1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q.PopContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PopContext on empty queue = %v, want deadline exceeded", err)
	}
	q.TryPush(1)
	if err := q.Push(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Push on full queue = %v, want deadline exceeded", err)
	}
}

// TestSPSCWakeNotLost parks the consumer before every single push: a lost
// wake-up would hang the test (and the deadline fails it).
func TestSPSCWakeNotLost(t *testing.T) {
	q := NewSPSC[int](4)
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			// Wait until the consumer has drained the queue and is at
			// least about to park.
			for q.Len() != 0 || q.notEmpty.waiters.Load() == 0 {
				time.Sleep(time.Microsecond)
			}
			if !q.TryPush(i) {
				panic("TryPush into an empty queue failed")
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		v, err := q.PopContext(ctx)
		if err != nil || v != i {
			t.Fatalf("PopContext = %d,%v want %d (lost wake-up?) head=%d tail=%d waiters=%d tokens=%d", v, err, i, q.head.Load(), q.tail.Load(), q.notEmpty.waiters.Load(), len(q.notEmpty.ch))
		}
	}
	wg.Wait()
}

func TestSPSCZeroAllocs(t *testing.T) {
	q := NewSPSC[[]byte](16)
	buf := make([]byte, 64)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		q.TryPush(buf)
		q.TryPop()
		_ = q.Push(ctx, buf)
		q.Pop()
	})
	if allocs != 0 {
		t.Fatalf("TryPush/TryPop/Push/Pop allocate %.1f times per run, want 0", allocs)
	}
}
