package poller

import (
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// hotTimeout bounds one raw wait when the runtime sends no preemption
	// signals (see timed). Otherwise a raw wait has no timeout: any
	// timeout, 1 ms or 20 ms alike, cost 18 µs per round trip of the
	// ping-pong in the shared layout, and about 5 % of it with GOMAXPROCS
	// 1 in the pinned one (BENCHMARKS.md, rounds four and five).
	hotTimeout = time.Millisecond
	// coldAfter is how long no descriptor may be ready before the Poller
	// waits through the scheduler instead (an idle daemon then sleeps
	// with no P held and no timer). An untimed raw wait learns it at the
	// runtime's preemption signal (see Wait), 10-20 ms apart.
	coldAfter = 20 * time.Millisecond
	// yieldEvery bounds how long a busy loop keeps the P to itself while
	// every P is held by a hot Poller (see maybeYield).
	yieldEvery = time.Millisecond
	// yieldAnyway bounds it otherwise, below the 10 ms after which the
	// runtime's sysmon preempts a goroutine that has not been through the
	// scheduler, or, finding it in a system call (the data path's reads
	// and writes), takes its P away and then polls every 20 µs for a
	// while (BENCHMARKS.md, round three).
	yieldAnyway = 5 * time.Millisecond
	// floodedWithin: a wait that returned this soon found a descriptor
	// ready without sleeping (see flooded).
	floodedWithin = 5 * time.Microsecond
	// floodedAfter is how many such waits in a row make a stream: in a
	// ping-pong a reply is sometimes there already when the forwarder
	// comes back to wait (measured: futex wake-ups per round trip 0.24
	// -> 0.55 when one such wait counted), in a stream every wait is one.
	floodedAfter = 4
)

// hotPollers counts the Pollers of the process that wait raw (hot): each
// holds a P that the rest of the program cannot use meanwhile.
var hotPollers atomic.Int32

// Poller waits on a fixed set of descriptors. It is used by one goroutine;
// a raw wait keeps that goroutine on its OS thread. It allocates nothing
// per Wait.
type Poller struct {
	fds       []unix.PollFd
	hot       unix.Timespec // the raw wait's timeout, when it has one (timed)
	left      unix.Timespec // ppoll's copy of it
	quiet     int           // timed raw waits in a row that found nothing
	coldAfter int           // ... before the next wait is a cold one
	counted   bool          // this Poller is in hotPollers
	noFreeP   bool          // at the last check every P was held by a hot Poller
	idleCold  time.Duration // coldAfter, for an untimed wait (tests lengthen it)
	lastYield time.Time
	lastCheck time.Time // when maybeYield last compared hot Pollers and Ps
	// atOnce counts the Waits in a row that found a descriptor ready at
	// once (see flooded).
	atOnce    int
	busyPoll  time.Duration // SetBusyPoll
	lastReady time.Time     // when the last Wait found a descriptor ready
}

// New returns a Poller for readability of fds (the caller keeps them open
// and non-blocking for the Poller's lifetime, and calls Close at its end).
func New(fds ...int) *Poller {
	now := time.Now()
	p := &Poller{hot: unix.NsecToTimespec(int64(hotTimeout)), coldAfter: int(coldAfter / hotTimeout),
		lastYield: now, lastReady: now, idleCold: coldAfter}
	for _, fd := range fds {
		p.fds = append(p.fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	p.count(true)
	p.noFreeP = noFreeP()
	return p
}

// Close ends the Poller's share of the process's hot waits. The
// descriptors are the caller's.
func (p *Poller) Close() { p.count(false) }

// count keeps hotPollers: whether this Poller now waits raw.
func (p *Poller) count(hot bool) {
	if hot == p.counted {
		return
	}
	p.counted = hot
	if hot {
		hotPollers.Add(1)
	} else {
		hotPollers.Add(-1)
	}
}

// SetBusyPoll makes each Wait within d of the last Wait that found a
// descriptor ready check the descriptors without sleeping, handing the
// CPU to any other runnable thread between checks (sched_yield), before
// it sleeps; 0 (the default) turns it off, and d is capped at
// MaxBusyPoll. While traffic flows this trades CPU time for the wake-up
// of a sleeping thread, which on a virtual machine whose idle vCPUs halt
// costs tens of microseconds (BENCHMARKS.md, round three); an idle
// Poller does not poll, as the window only follows a ready descriptor.
func (p *Poller) SetBusyPoll(d time.Duration) { p.busyPoll = min(max(d, 0), MaxBusyPoll) }

// Ready reports whether the i-th descriptor (in New's order) was readable,
// or in error, hung up or invalid (a read then says which), at the last
// Wait.
func (p *Poller) Ready(i int) bool { return p.fds[i].Revents != 0 }

// Wait blocks until at least one descriptor is ready. It returns only
// errors of ppoll itself (EINTR is handled).
func (p *Poller) Wait() error {
	if p.spin() {
		p.atOnce = 0
		p.ready(time.Now())
		return nil
	}
	for {
		var n uintptr
		var errno unix.Errno
		start := time.Now()
		raw := p.quiet < p.coldAfter
		switch {
		case raw && p.timed():
			// ppoll writes the time left back into its argument.
			p.left = p.hot
			n, errno = p.rawPPoll(&p.left)
		case raw:
			n, errno = p.rawPPoll(nil)
		default:
			p.count(false)
			n, _, errno = unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p.fds[0])), uintptr(len(p.fds)), 0, 0, 0, 0)
			p.count(true)
		}
		switch {
		case errno == unix.EINTR:
			// Most often the runtime's preemption signal (sysmon's after
			// 10 ms on the P, or a GC stopping the world): yield. For an
			// untimed raw wait it is also the moment to go cold.
			p.yield()
			if raw && p.lastYield.Sub(p.lastReady) >= p.idleCold {
				p.quiet = p.coldAfter
			}
		case errno != 0:
			return errno
		case n == 0:
			p.quiet++
			p.maybeYield(time.Now())
		default:
			now := time.Now()
			if raw && now.Sub(start) < floodedWithin {
				p.atOnce++
			} else {
				p.atOnce = 0
			}
			p.ready(now)
			return nil
		}
	}
}

// rawPPoll waits in ppoll for p's descriptors as a raw system call (the
// thread keeps its P), up to timeout, or with no timeout if it is nil.
func (p *Poller) rawPPoll(timeout *unix.Timespec) (uintptr, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p.fds[0])), uintptr(len(p.fds)),
		uintptr(unsafe.Pointer(timeout)), 0, 0, 0)
	return n, errno
}

// timed reports whether a raw wait needs a timeout: only when the runtime
// would not interrupt it with a signal (GODEBUG asyncpreemptoff=1). The
// rest of the program relies on that signal to get the P from an untimed
// wait: a garbage collection stopping the world at once, and any other
// goroutine, when no P is left for it (GOMAXPROCS 1), within sysmon's
// 10 ms. That delay only lasts while the data path is quiet but not yet
// cold (coldAfter); while packets flow the loop yields every yieldEvery.
func (p *Poller) timed() bool { return !preemptSignals }

// ready notes a Wait that found a descriptor ready at now.
func (p *Poller) ready(now time.Time) {
	p.quiet = 0
	p.lastReady = now
	p.maybeYield(now)
}

// spin checks the descriptors without sleeping until one is ready (true)
// or the busy-poll window after the last ready Wait closes.
func (p *Poller) spin() bool {
	if p.busyPoll == 0 || p.quiet != 0 {
		return false
	}
	var zero unix.Timespec
	deadline := p.lastReady.Add(p.busyPoll)
	for time.Now().Before(deadline) {
		n, errno := p.rawPPoll(&zero)
		if errno != 0 {
			return false // Wait's own ppoll handles it
		}
		if n > 0 {
			return true
		}
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
	return false
}

// maybeYield yields (see yield) once the P has been kept yieldEvery while
// packets stream in (flooded) or every P of the process is held by a hot
// Poller, so that nothing else of the program runs meanwhile (GOMAXPROCS
// 1 with one worker), and yieldAnyway otherwise. A yield while a P is
// free is a futex wake-up of an idle thread (the scheduler's wakep),
// which then often takes the goroutine over: at every millisecond, that
// was one per round trip of a ping-pong (BENCHMARKS.md, round three).
// Under a stream the same hand-over lets the goroutine move off a busy
// CPU: without it, 64-byte UDP lost more at the sender's TUN queue.
func (p *Poller) maybeYield(now time.Time) {
	since := now.Sub(p.lastYield)
	switch {
	case since >= yieldAnyway, since >= yieldEvery && p.flooded():
		p.yield()
	case since >= yieldEvery && now.Sub(p.lastCheck) >= yieldEvery:
		// runtime.GOMAXPROCS takes the scheduler's lock: once a millisecond.
		p.lastCheck = now
		if p.noFreeP = noFreeP(); p.noFreeP {
			p.yield()
		}
	}
}

// flooded reports whether packets stream in: the last floodedAfter Waits
// found a descriptor ready at once.
func (p *Poller) flooded() bool { return p.atOnce >= floodedAfter }

// yield lets the other goroutines of a P the raw wait holds run (with
// GOMAXPROCS 1, nothing else runs while the Poller waits raw).
func (p *Poller) yield() {
	runtime.Gosched()
	p.lastYield = time.Now()
}

// noFreeP reports whether every P of the process is held by a hot Poller.
func noFreeP() bool { return int(hotPollers.Load()) >= runtime.GOMAXPROCS(0) }
