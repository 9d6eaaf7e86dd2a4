package poller

import (
	"fmt"
	"os"
	"os/exec"
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
			defer p.Close()
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
	_, err := ppollArgs(tid)
	return err
}

// ppollArgs are the arguments of the ppoll thread tid of this process is
// blocked in, as /proc's syscall file gives them (hexadecimal).
func ppollArgs(tid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/syscall", tid))
	if err != nil {
		return nil, err
	}
	return parsePPollArgs(tid, b)
}

// ppollArgsFromOutside is ppollArgs read by another process: with
// GOMAXPROCS 1 a goroutine of this one runs only while the raw wait has
// given up the P, so it can never see the thread in ppoll itself. The
// shell reads the file until it shows ppoll (at most 20000 reads): by
// then the test's goroutine is blocked waiting for it, and the runtime
// has handed the P back to the wait.
func ppollArgsFromOutside(tid int) ([]string, error) {
	const script = `for i in $(seq 20000); do read -r l < "$1"; case "$l" in "$2 "*) break;; esac; done; echo "$l"`
	path := fmt.Sprintf("/proc/%d/task/%d/syscall", os.Getpid(), tid)
	b, err := exec.Command("sh", "-c", script, "sh", path, strconv.Itoa(unix.SYS_PPOLL)).Output()
	if err != nil {
		return nil, err
	}
	return parsePPollArgs(tid, b)
}

func parsePPollArgs(tid int, b []byte) ([]string, error) {
	f := strings.Fields(string(b))
	if len(f) < 4 || f[0] != strconv.Itoa(unix.SYS_PPOLL) {
		return nil, fmt.Errorf("thread %d is not blocked in ppoll: %q", tid, strings.TrimSpace(string(b)))
	}
	return f[1:], nil
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
	waitHotPollers(t, before, "in a cold wait")
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
			// runtime gets to look (with GOMAXPROCS 1, at the Poller's
			// 1 ms timeout).
			ts := unix.NsecToTimespec(int64(300 * time.Microsecond))
			unix.Nanosleep(&ts, nil)
			unix.Write(a, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}()
	})
}

// waitHotPollers waits until the process has want hot Pollers; what says
// what it means if it never does.
func waitHotPollers(t *testing.T, want int32, what string) {
	t.Helper()
	if err := testbed.Eventually(5*time.Second, func() error {
		if got := hotPollers.Load(); got != want {
			return fmt.Errorf("%s: %d hot pollers, want %d", what, got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// withGOMAXPROCS runs the test with n Ps.
func withGOMAXPROCS(t *testing.T, n int) {
	t.Helper()
	old := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// waitInBackground starts p.Wait on a goroutine locked to its thread and
// returns that thread's id and the Wait's result.
func waitInBackground(p *Poller) (tid int, done <-chan error) {
	tids, errs := make(chan int, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		errs <- p.Wait()
	}()
	return <-tids, errs
}

// ppollTimeout is the timeout argument (a pointer, "0x0" for none) of the
// ppoll thread tid of this process is blocked in.
func ppollTimeout(tid int) (string, error) {
	args, err := ppollArgs(tid)
	if err != nil {
		return "", err
	}
	return args[2], nil // fds, nfds, timeout
}

// TestHotWaitUntimedWhileAPIsFree: with a P left for the rest of the
// program, a hot Wait sleeps in ppoll with no timeout (no timer armed
// and cancelled per wake-up), and a garbage collection still stops the
// world meanwhile: the runtime's preemption signal ends the wait, which
// yields and waits again, still hot, until its descriptor is ready.
func TestHotWaitUntimedWhileAPIsFree(t *testing.T) {
	if !preemptSignals {
		t.Skip("GODEBUG asyncpreemptoff is set: every raw wait is timed")
	}
	withGOMAXPROCS(t, 2)
	a := eventfd(t)
	p := New(a)
	defer p.Close()
	p.idleCold = time.Hour // stay hot: the GC must get the P from a raw wait
	before := hotPollers.Load()
	if p.noFreeP {
		t.Fatalf("%d hot Pollers hold both Ps: a test leaked one", before)
	}
	tid, done := waitInBackground(p)
	if err := testbed.Eventually(5*time.Second, func() error {
		timeout, err := ppollTimeout(tid)
		if err == nil && timeout != "0x0" {
			return fmt.Errorf("ppoll's timeout is %s, want none (0x0)", timeout)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	runtime.GC() // hangs (the test times out) if the raw wait kept its P
	if err := testbed.Eventually(5*time.Second, func() error { return blockedInPPoll(tid) }); err != nil {
		t.Fatalf("after the GC: %v", err)
	}
	if got := hotPollers.Load(); got != before {
		t.Fatalf("after the GC: %d hot pollers, want %d (the wait stays hot)", got, before)
	}
	signal(t, a)
	if err := <-done; err != nil || !p.Ready(0) {
		t.Fatalf("Wait: %v, Ready(0) = %v; want a ready", err, p.Ready(0))
	}
}

// TestHotWaitUntimedWithoutAFreeP: with GOMAXPROCS 1 a hot Wait holds the
// only P and still sleeps with no timeout; the rest of the program runs
// all the same, at the runtime's preemption signals: this test's own
// goroutine (which reads the wait's arguments), a timer's, and a garbage
// collection.
func TestHotWaitUntimedWithoutAFreeP(t *testing.T) {
	if !preemptSignals {
		t.Skip("GODEBUG asyncpreemptoff is set: every raw wait is timed")
	}
	withGOMAXPROCS(t, 1)
	a := eventfd(t)
	p := New(a)
	defer p.Close()
	p.idleCold = time.Hour // stay hot: everything else must get the P from a raw wait
	if !p.noFreeP {
		t.Fatalf("GOMAXPROCS 1 and a hot Poller: want no free P")
	}
	tid, done := waitInBackground(p)
	untimed := func() error {
		args, err := ppollArgsFromOutside(tid)
		if err == nil && args[2] != "0x0" {
			return fmt.Errorf("ppoll's timeout is %s, want none (0x0)", args[2])
		}
		return err
	}
	if err := testbed.Eventually(10*time.Second, untimed); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fired := make(chan time.Duration, 1)
	time.AfterFunc(time.Millisecond, func() { fired <- time.Since(start) })
	select {
	case late := <-fired:
		t.Logf("a 1 ms timer fired after %v", late)
	case <-time.After(5 * time.Second):
		t.Fatal("a timer did not fire while the raw wait held the only P")
	}
	runtime.GC() // hangs (the test times out) if the raw wait kept its P
	if err := testbed.Eventually(10*time.Second, untimed); err != nil {
		t.Fatalf("after the GC: %v", err)
	}
	signal(t, a)
	if err := <-done; err != nil || !p.Ready(0) {
		t.Fatalf("Wait: %v, Ready(0) = %v; want a ready", err, p.Ready(0))
	}
}

// TestUntimedWaitGoesCold: a hot Wait with no timeout whose descriptor
// stays quiet still becomes a cold one (no P held) once coldAfter has
// passed, at one of the runtime's preemption signals (10-20 ms apart),
// and returns when the descriptor becomes ready.
func TestUntimedWaitGoesCold(t *testing.T) {
	if !preemptSignals {
		t.Skip("GODEBUG asyncpreemptoff is set: every raw wait is timed")
	}
	withGOMAXPROCS(t, 2)
	before := hotPollers.Load()
	a := eventfd(t)
	p := New(a)
	defer p.Close()
	start := time.Now()
	_, done := waitInBackground(p)
	waitHotPollers(t, before, "the quiet wait is still hot")
	t.Logf("went cold %v after the wait began (coldAfter %v)", time.Since(start), coldAfter)
	signal(t, a)
	if err := <-done; err != nil || !p.Ready(0) {
		t.Fatalf("Wait: %v, Ready(0) = %v; want a ready", err, p.Ready(0))
	}
}

// TestAsyncPreemptOff reads GODEBUG as the runtime does.
func TestAsyncPreemptOff(t *testing.T) {
	for godebug, want := range map[string]bool{
		"": false, "asyncpreemptoff=1": true, "asyncpreemptoff=0": false,
		"gctrace=1,asyncpreemptoff=1": true, "asyncpreemptoff=1,asyncpreemptoff=0": false,
		"asyncpreemptoff=2": true, "xasyncpreemptoff=1": false,
	} {
		if got := asyncPreemptOff(godebug); got != want {
			t.Errorf("asyncPreemptOff(%q) = %v, want %v", godebug, got, want)
		}
	}
}
