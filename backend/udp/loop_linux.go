package udp

import (
	"errors"
	"fmt"
	"time"

	"github.com/flannelu/flannelu/internal/poller"
)

// The descriptors a worker waits on, in the poller's order.
const (
	pollTUN     = iota // packets from local pods
	pollSocket         // datagrams from peers
	pollClosing        // the TUN device's eventfd: StopReads or Close
	pollSocket6        // a dual-stack host's IPv6 socket (out6)
)

// run forwards both directions from one goroutine until the device's
// reads are stopped (Backend.stopWorkers) or the TUN or the socket is
// closed, the way flanneld's C proxy does: it waits in ppoll on
// both descriptors itself, outside Go's netpoller, and its thread keeps
// its P while traffic flows (package poller says why and what bounds it).
// The goroutine is not locked to its thread: a raw wait keeps it on one
// thread anyway, and a locked goroutine's every yield hands the P to
// another thread and back (measured: p50 round trip 0.57-1.56x
// flanneld's locked, 0.88-1.06x unlocked, shared layout; BENCHMARKS.md).
// Where one packet is ready it reads one; the batch calls (multi-packet
// TUN reads, recvmmsg of many) are taken while a descriptor stays ready
// from one wait to the next. busyPoll is the poller's SetBusyPoll.
func (w *worker) run(busyPoll time.Duration) error {
	var err error
	held := w.withHeld(func(fds ...int) { err = w.loop(poller.New(fds...), busyPoll) })
	if held != nil && !isClosed(held) {
		return held
	}
	return err
}

// withHeld runs fn with the worker's descriptors held open for the
// poller to wait on, in its order (pollTUN, pollSocket, pollClosing, then
// pollSocket6 on a dual-stack host). It returns the error of the Hold
// that failed, in which case fn did not run.
func (w *worker) withHeld(fn func(fds ...int)) error {
	var sockErr, sock6Err error
	tunErr := w.in.q.Hold(func(tunFD, closing int) {
		sockErr = w.out.conn.Hold(func(sock int) {
			if w.out6 == nil {
				fn(tunFD, sock, closing)
				return
			}
			sock6Err = w.out6.conn.Hold(func(sock6 int) { fn(tunFD, sock, closing, sock6) })
		})
	})
	return errors.Join(tunErr, sockErr, sock6Err)
}

// loop runs turns until one says stop, then closes p.
func (w *worker) loop(p *poller.Poller, busyPoll time.Duration) error {
	defer p.Close()
	p.SetBusyPoll(busyPoll)
	var pace pace
	for {
		stop, err := w.turn(p, &pace)
		if stop || err != nil {
			return err
		}
	}
}

// pace remembers which descriptors were ready at the last wait.
type pace struct{ tun, socket, socket6 bool }

// batch is how many packets to read from a ready descriptor: one, unless
// it was ready at the previous wait too (traffic is streaming in), then a
// whole batch, which costs a final read that finds nothing.
func batch(readyBefore bool) int {
	if readyBefore {
		return allReady
	}
	return 1
}

// allReady asks a half for as many packets as its buffers hold.
const allReady = 1 << 30

// turn waits once and moves what is ready; stop is true when the worker
// is stopped or closed. A stop seen at the wait reads nothing more: what
// the previous turns read is already sent.
func (w *worker) turn(p *poller.Poller, pace *pace) (stop bool, err error) {
	if err := p.Wait(); err != nil {
		return true, fmt.Errorf("ppoll: %w", err)
	}
	if p.Ready(pollClosing) {
		return true, nil
	}
	tun, socket := p.Ready(pollTUN), p.Ready(pollSocket)
	socket6 := w.out6 != nil && p.Ready(pollSocket6)
	if tun {
		err = w.in.step(batch(pace.tun))
	}
	if socket && err == nil {
		err = w.out.step(batch(pace.socket))
	}
	if socket6 && err == nil {
		err = w.out6.step(batch(pace.socket6))
	}
	pace.tun, pace.socket, pace.socket6 = tun, socket, socket6
	if err != nil {
		if isClosed(err) {
			return true, nil
		}
		return true, err
	}
	return false, nil
}
