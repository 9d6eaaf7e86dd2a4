package poller

import (
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// hotTimeout bounds one raw wait: the longest the rest of the program
	// waits for this P while no descriptor is ready.
	hotTimeout = time.Millisecond
	// coldAfter is how long no descriptor may be ready before the Poller
	// waits through the scheduler instead (an idle daemon then sleeps
	// with no P held and no timer).
	coldAfter = 20 * time.Millisecond
	// yieldEvery bounds how long a busy loop keeps the P to itself.
	yieldEvery = time.Millisecond
)

// Poller waits on a fixed set of descriptors. It is used by one goroutine,
// which should be locked to its OS thread (runtime.LockOSThread) so that
// the raw wait's P is the one that thread holds. It allocates nothing per
// Wait.
type Poller struct {
	fds       []unix.PollFd
	hot       unix.Timespec // the raw wait's timeout
	left      unix.Timespec // ppoll's copy of it
	quiet     int           // raw waits in a row that found nothing
	coldAfter int           // ... before the next wait is a cold one
	lastYield time.Time
}

// New returns a Poller for readability of fds (the caller keeps them open
// and non-blocking for the Poller's lifetime).
func New(fds ...int) *Poller {
	p := &Poller{hot: unix.NsecToTimespec(int64(hotTimeout)), coldAfter: int(coldAfter / hotTimeout),
		lastYield: time.Now()}
	for _, fd := range fds {
		p.fds = append(p.fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	return p
}

// Ready reports whether the i-th descriptor (in New's order) was readable,
// or in error, hung up or invalid (a read then says which), at the last
// Wait.
func (p *Poller) Ready(i int) bool { return p.fds[i].Revents != 0 }

// WantWrite makes the i-th descriptor's wait also end when it is writable
// (on) or not (off): a sender that hit a full buffer waits for room.
func (p *Poller) WantWrite(i int, on bool) {
	if on {
		p.fds[i].Events |= unix.POLLOUT
	} else {
		p.fds[i].Events &^= unix.POLLOUT
	}
}

// Writable reports whether the i-th descriptor was writable at the last
// Wait.
func (p *Poller) Writable(i int) bool { return p.fds[i].Revents&unix.POLLOUT != 0 }

// Wait blocks until at least one descriptor is ready. It returns only
// errors of ppoll itself (EINTR is handled).
func (p *Poller) Wait() error {
	for {
		var n uintptr
		var errno unix.Errno
		if p.quiet < p.coldAfter {
			// ppoll writes the time left back into its argument.
			p.left = p.hot
			n, _, errno = unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p.fds[0])), uintptr(len(p.fds)),
				uintptr(unsafe.Pointer(&p.left)), 0, 0, 0)
		} else {
			n, _, errno = unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p.fds[0])), uintptr(len(p.fds)), 0, 0, 0, 0)
		}
		switch {
		case errno == unix.EINTR:
			// Most often sysmon's preemption signal or a GC stop: yield.
			p.yield()
		case errno != 0:
			return errno
		case n == 0:
			p.quiet++
			p.yield()
		default:
			p.quiet = 0
			if time.Since(p.lastYield) >= yieldEvery {
				p.yield()
			}
			return nil
		}
	}
}

// yield lets the other goroutines of a P the raw wait holds run (with
// GOMAXPROCS 1, nothing else runs while the Poller waits raw).
func (p *Poller) yield() {
	runtime.Gosched()
	p.lastYield = time.Now()
}
