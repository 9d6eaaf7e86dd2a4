package poller

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Step makes one system call of a batch operation (a read or write of many
// packets) on fd and says whether the batch is complete. A call the kernel
// answers with EINTR is made again, one with EAGAIN ends the attempt (the
// descriptor is not ready), any other errno ends the operation: Op is the
// one loop that applies these rules, for every descriptor of the data path.
type Step func(fd uintptr) (complete bool, errno unix.Errno)

// roomWait bounds one wait for room to write (see Op.Write): Close does not
// wake a wait for writability, so the wait comes back to look.
const roomWait = 100 // ms

// Op runs a Step on a non-blocking descriptor that Go's netpoller does not
// watch, allocating nothing. Bind it once; its methods keep the descriptor
// open while they use it (syscall.RawConn.Control), and fail, with the
// Control error, once it is closed.
//
// The one rule for a full buffer: a write that finds no room waits for it
// (Write), in a wait the scheduler knows about, until the kernel has taken
// everything. A full socket send buffer means the underlay is slower than
// the pods: waiting pushes back into the TUN, whose queue the kernel
// drops from and counts (flannelu_tun_tx_dropped_packets_total), where a
// drop here would waste the work done on the packets. A TUN's write buffer
// is unbounded in practice (its socket's sndbuf is INT_MAX), so it never
// waits, and the rule is the same for it.
type Op struct {
	step   Step
	ctl    func(fd uintptr)      // runs the step loop, for Control
	polled func(fd uintptr) bool // the same, for Read and Write of Go's netpoller
	ready  bool
	errno  unix.Errno
	room   [1]unix.PollFd
	wait   func(fd uintptr) // waits for room, for Control
}

// Bind sets the operation's step and prepares the callbacks that run it:
// a closure made per call would allocate.
func (o *Op) Bind(step Step) {
	o.step = step
	o.ctl = func(fd uintptr) { o.ready, o.errno = loop(fd, o.step) }
	o.polled = func(fd uintptr) bool {
		o.ctl(fd)
		return o.ready || o.errno != 0
	}
	o.wait = func(fd uintptr) {
		o.room[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
		unix.Poll(o.room[:], roomWait) //nolint:errcheck // the next attempt says how it went
	}
}

// loop is the retry loop of every batch system call.
func loop(fd uintptr, step Step) (ready bool, errno unix.Errno) {
	for {
		complete, e := step(fd)
		switch e {
		case 0:
			if complete {
				return true, 0
			}
		case unix.EINTR:
		case unix.EAGAIN:
			return false, 0
		default:
			return true, e
		}
	}
}

// Try runs the step loop once, without waiting: ready is false when the
// descriptor was not ready (EAGAIN) before the batch was complete. errno is
// the system call's that ended the operation, err Control's.
func (o *Op) Try(raw syscall.RawConn) (ready bool, errno unix.Errno, err error) {
	o.ready, o.errno = true, 0
	err = raw.Control(o.ctl)
	return o.ready, o.errno, err
}

// Write runs the step loop until the batch is complete, waiting for room
// whenever the kernel has none (see Op).
func (o *Op) Write(raw syscall.RawConn) (unix.Errno, error) {
	for {
		ready, errno, err := o.Try(raw)
		if ready || err != nil {
			return errno, err
		}
		if err := raw.Control(o.wait); err != nil {
			return 0, err
		}
	}
}

// Polled runs the step loop on a descriptor Go's netpoller watches, which
// waits (for readability, or for writability when write is set) while the
// descriptor is not ready.
func (o *Op) Polled(raw syscall.RawConn, write bool) (unix.Errno, error) {
	o.errno = 0
	var err error
	if write {
		err = raw.Write(o.polled)
	} else {
		err = raw.Read(o.polled)
	}
	return o.errno, err
}
