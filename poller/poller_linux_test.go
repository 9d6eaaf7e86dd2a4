package poller

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// eventfd returns a non-blocking eventfd closed at the end of the test.
func eventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func signal(t *testing.T, fd int) {
	t.Helper()
	if _, err := unix.Write(fd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
}

func drain(fd int) {
	var b [8]byte
	unix.Read(fd, b[:])
}

// TestWaitWakes: a wait returns when the second of two descriptors
// becomes readable from another goroutine, and says which, both while
// the Poller waits raw (hot) and through the scheduler (cold).
func TestWaitWakes(t *testing.T) {
	for _, cold := range []bool{false, true} {
		t.Run(map[bool]string{false: "hot", true: "cold"}[cold], func(t *testing.T) {
			a, b := eventfd(t), eventfd(t)
			p := New(a, b)
			if cold {
				p.quiet = p.coldAfter
			}
			done := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				done <- p.Wait()
			}()
			signal(t, b)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait did not return within 5 s of the descriptor becoming readable")
			}
			if p.Ready(0) || !p.Ready(1) {
				t.Fatalf("Ready(0) = %v, Ready(1) = %v; want only the signalled descriptor", p.Ready(0), p.Ready(1))
			}
		})
	}
}

// TestWaitAllocatesNothing: a Wait with a descriptor ready allocates
// nothing, busy polling or not.
func TestWaitAllocatesNothing(t *testing.T) {
	for _, busyPoll := range []time.Duration{0, MaxBusyPoll} {
		a := eventfd(t)
		p := New(a)
		p.SetBusyPoll(busyPoll)
		signal(t, a)
		if n := testing.AllocsPerRun(100, func() {
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Fatalf("busy poll %v: %.1f allocations per Wait, want 0", busyPoll, n)
		}
		p.Close()
	}
}

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU(t *testing.T) time.Duration {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// TestBusyPollSeesReadyAndIsBounded: within the busy-poll window after a
// ready Wait, a descriptor already ready is reported at once, and with
// none ready the polling gives up when the window closes and the thread
// sleeps in ppoll, having used at most about the window's CPU time (an
// unbounded spin never sleeps, and the wait for that sleep fails).
func TestBusyPollSeesReadyAndIsBounded(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a, b := eventfd(t), eventfd(t)
	p := New(a, b)
	defer p.Close()
	p.SetBusyPoll(MaxBusyPoll)
	p.lastReady = time.Now()
	signal(t, b)
	if !p.spin() || p.Ready(0) || !p.Ready(1) {
		t.Fatalf("spin with b ready: Ready(0) = %v, Ready(1) = %v; want b reported", p.Ready(0), p.Ready(1))
	}
	drain(b)

	p.lastReady = time.Now()
	start := time.Now()
	if p.spin() {
		t.Fatal("spin reported a descriptor ready, none was")
	}
	if waited := time.Since(start); waited < MaxBusyPoll {
		t.Fatalf("spin gave up after %v, before its %v window closed", waited, MaxBusyPoll)
	}
	asleep := make(chan error, 1)
	go func(tid int) {
		// Once the Wait's thread blocks in ppoll, its busy polling is
		// over: only then does the descriptor become ready.
		asleep <- testbed.Eventually(5*time.Second, func() error { return blockedInPPoll(tid) })
		unix.Write(a, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}(unix.Gettid())
	p.lastReady = time.Now()
	before := threadCPU(t)
	if err := p.Wait(); err != nil || !p.Ready(0) {
		t.Fatalf("Wait: %v, Ready(0) = %v; want a ready", err, p.Ready(0))
	}
	used := threadCPU(t) - before
	if err := <-asleep; err != nil {
		t.Fatalf("the Wait never slept: %v", err)
	}
	t.Logf("CPU time of a Wait that polled, then slept, with a %v busy-poll window: %v", MaxBusyPoll, used)
	if used > 15*time.Millisecond {
		t.Fatalf("a Wait that polled, then slept, used %v of CPU, want about the %v window", used, MaxBusyPoll)
	}
}

// blockedInPPoll says whether thread tid of this process sleeps in ppoll
// (/proc's syscall file names the call a blocked thread is in; a thread
// that runs, a zero-timeout ppoll included, shows "running").
func blockedInPPoll(tid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/syscall", tid))
	if err != nil {
		return err
	}
	if f := strings.Fields(string(b)); len(f) == 0 || f[0] != strconv.Itoa(unix.SYS_PPOLL) {
		return fmt.Errorf("thread %d is not blocked in ppoll: %q", tid, strings.TrimSpace(string(b)))
	}
	return nil
}

// TestBusyPollLimit: SetBusyPoll caps the window at MaxBusyPoll and takes
// a negative one for off.
func TestBusyPollLimit(t *testing.T) {
	p := New(eventfd(t))
	defer p.Close()
	for _, c := range []struct{ set, want time.Duration }{{time.Second, MaxBusyPoll}, {-time.Second, 0}, {50 * time.Microsecond, 50 * time.Microsecond}} {
		if p.SetBusyPoll(c.set); p.busyPoll != c.want {
			t.Errorf("SetBusyPoll(%v): window %v, want %v", c.set, p.busyPoll, c.want)
		}
	}
}

// TestHotPollersCounted: a Poller counts among the P-holding (hot) ones
// from New until it waits through the scheduler (cold), again when that
// wait returns, and no more after Close; maybeYield relies on the
// count to yield only when no P is left for the rest of the program.
func TestHotPollersCounted(t *testing.T) {
	before := hotPollers.Load()
	a := eventfd(t)
	p := New(a)
	if got := hotPollers.Load(); got != before+1 {
		t.Fatalf("after New: %d hot pollers, want %d", got, before+1)
	}
	p.quiet = p.coldAfter
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	if err := testbed.Eventually(5*time.Second, func() error {
		if got := hotPollers.Load(); got != before {
			return fmt.Errorf("in a cold wait: %d hot pollers, want %d", got, before)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	signal(t, a)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := hotPollers.Load(); got != before+1 {
		t.Fatalf("after the cold wait returned: %d hot pollers, want %d", got, before+1)
	}
	p.Close()
	p.Close()
	if got := hotPollers.Load(); got != before {
		t.Fatalf("after Close (twice): %d hot pollers, want %d", got, before)
	}
}

// TestFloodedOnlyWhenReadyAtOnce: raw Waits that find a descriptor
// already ready, floodedAfter in a row, mark the Poller flooded
// (maybeYield then yields every millisecond, as under a stream of
// packets); one that had to sleep for it ends that. A preemption inside a
// ready wait, or a signal just after a wait began, can blur one Wait, so
// each kind gets ten Waits more than it needs.
func TestFloodedOnlyWhenReadyAtOnce(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a := eventfd(t)
	p := New(a)
	defer p.Close()
	seen := func(want bool, prepare func()) {
		t.Helper()
		for range floodedAfter + 10 {
			prepare()
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
			drain(a)
			if p.flooded() == want {
				return
			}
		}
		t.Fatalf("%d Waits, none with flooded = %v", floodedAfter+10, want)
	}
	seen(true, func() { signal(t, a) })
	seen(false, func() {
		go func() {
			// The kernel's sleep: a Go timer may fire only when the
			// Poller's own 1 ms timeout lets the runtime look.
			ts := unix.NsecToTimespec(int64(300 * time.Microsecond))
			unix.Nanosleep(&ts, nil)
			unix.Write(a, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}()
	})
}
