package ring

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// cell is one MPMC slot. seq says whose turn it is: seq == pos means free
// for the producer that claims position pos; seq == pos+1 means filled,
// for the consumer that claims pos.
type cell[T any] struct {
	seq atomic.Uint64
	val T
}

// MPMC is Dmitry Vyukov's bounded lock-free queue: any number of
// goroutines may push and pop at the same time. Each operation costs one
// compare-and-swap on a shared counter, so it is slower than SPSC; use it
// where several goroutines must hand values to one place, such as every
// forwarder goroutine feeding the packet tracer.
//
// Values pushed by one goroutine come out in the order it pushed them; the
// relative order of values from different producers is the order in which
// they claimed their slots. After a successful push the value belongs to
// whichever consumer pops it (see the package doc).
type MPMC[T any] struct {
	_   [cacheLine]byte
	enq atomic.Uint64 // next position a producer claims
	_   [cacheLine - 8]byte
	deq atomic.Uint64 // next position a consumer claims
	_   [cacheLine - 8]byte

	cells    []cell[T]
	mask     uint64
	closed   atomic.Bool
	notEmpty parker
	once     sync.Once
	_        [cacheLine]byte
}

// NewMPMC returns an empty queue holding up to capacity values, rounded up
// to a power of two (minimum 2, which the algorithm needs). It returns nil
// if capacity is too large to round.
func NewMPMC[T any](capacity int) *MPMC[T] {
	n := roundPow2(max(capacity, 2))
	if n == 0 {
		return nil
	}
	q := &MPMC[T]{
		cells:    make([]cell[T], n),
		mask:     uint64(n - 1),
		notEmpty: newParker(),
	}
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
	return q
}

// Cap returns the number of values the queue holds when full.
func (q *MPMC[T]) Cap() int { return len(q.cells) }

// Len returns the number of claimed slots: values queued plus pushes in
// progress. It is a snapshot that may be stale on return.
func (q *MPMC[T]) Len() int {
	d := q.deq.Load()
	e := q.enq.Load()
	if e < d {
		return 0
	}
	return int(e - d)
}

// TryPush appends v and returns true, or returns false at once when the
// queue is full. Safe from any goroutine. Like SPSC.TryPush it ignores
// Close.
func (q *MPMC[T]) TryPush(v T) bool {
	pos := q.enq.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch dif := int64(seq - pos); {
		case dif == 0:
			if q.enq.CompareAndSwap(pos, pos+1) {
				c.val = v
				c.seq.Store(pos + 1)
				q.notEmpty.wake()
				return true
			}
			pos = q.enq.Load()
		case dif < 0: // the slot still holds a value from one lap ago
			return false
		default: // another producer claimed pos; catch up
			pos = q.enq.Load()
		}
	}
}

// TryPop removes and returns the oldest value, or returns false at once
// when the queue is empty (or the oldest push is still in progress). Safe
// from any goroutine.
func (q *MPMC[T]) TryPop() (T, bool) {
	var zero T
	pos := q.deq.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch dif := int64(seq - (pos + 1)); {
		case dif == 0:
			if q.deq.CompareAndSwap(pos, pos+1) {
				v := c.val
				c.val = zero
				c.seq.Store(pos + q.mask + 1)
				return v, true
			}
			pos = q.deq.Load()
		case dif < 0:
			return zero, false
		default:
			pos = q.deq.Load()
		}
	}
}

// Pop removes and returns the oldest value, waiting while the queue is
// empty. It returns false once the queue is closed and empty. Any number
// of goroutines may wait in Pop at once.
func (q *MPMC[T]) Pop() (T, bool) {
	v, err := q.PopContext(context.Background())
	return v, err == nil
}

// PopContext is Pop that also gives up when ctx ends, returning ctx.Err().
func (q *MPMC[T]) PopContext(ctx context.Context) (T, error) {
	var zero T
	slept := false
	for {
		if v, ok := q.TryPop(); ok {
			if slept && (q.Len() > 0 || q.closed.Load()) {
				// One token may stand for several pushes, or for Close;
				// pass it on so another sleeper takes the rest or sees
				// the close.
				q.notEmpty.wake()
			}
			return v, nil
		}
		if q.closed.Load() {
			q.notEmpty.wake() // release the next waiter too
			if v, ok := q.TryPop(); ok {
				return v, nil
			}
			if q.Len() == 0 {
				return zero, ErrClosed
			}
		}
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		q.notEmpty.waiters.Add(1)
		switch {
		case q.enq.Load() == q.deq.Load() && !q.closed.Load():
			q.notEmpty.sleep(ctx)
			slept = true
		default:
			// A producer claimed a slot but has not filled it yet: it is
			// a few instructions from done, unless it was preempted.
			runtime.Gosched()
		}
		q.notEmpty.waiters.Add(-1)
	}
}

// Close releases every goroutine blocked in Pop. Afterwards Pop returns
// the values still queued and then false. Close is idempotent.
func (q *MPMC[T]) Close() {
	q.once.Do(func() {
		q.closed.Store(true)
		q.notEmpty.wake() // each released waiter wakes the next
	})
}
