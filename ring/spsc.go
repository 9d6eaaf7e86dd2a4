package ring

import (
	"context"
	"sync"
	"sync/atomic"
)

// SPSC is a bounded lock-free queue for exactly one producer goroutine
// (TryPush, Push) and one consumer goroutine (TryPop, Pop, PopContext).
// Len, Cap and Close may be called from anywhere. Calling a producer
// method from two goroutines at once, or a consumer method from two,
// corrupts the queue; use MPMC for that.
//
// Values come out in the order they went in. After a successful push the
// value belongs to the consumer (see the package doc). The consumer's slot
// is zeroed on pop so the ring does not keep popped values alive.
type SPSC[T any] struct {
	_ [cacheLine]byte
	// Consumer side: head is the next slot to pop. cachedTail is the
	// consumer's last view of tail, so it touches the producer's cache
	// line only when the ring looks empty.
	head       atomic.Uint64
	cachedTail uint64
	_          [cacheLine - 16]byte
	// Producer side, mirror image.
	tail       atomic.Uint64
	cachedHead uint64
	_          [cacheLine - 16]byte

	// Read-mostly after construction.
	buf      []T
	mask     uint64
	closed   atomic.Bool
	notEmpty parker // the consumer parks here
	notFull  parker // the producer parks here
	once     sync.Once
	_        [cacheLine]byte
}

// NewSPSC returns an empty queue holding up to capacity values, rounded up
// to a power of two (minimum 1). It returns nil if capacity is too large
// to round.
func NewSPSC[T any](capacity int) *SPSC[T] {
	n := roundPow2(capacity)
	if n == 0 {
		return nil
	}
	return &SPSC[T]{
		buf:      make([]T, n),
		mask:     uint64(n - 1),
		notEmpty: newParker(),
		notFull:  newParker(),
	}
}

// Cap returns the number of values the queue holds when full.
func (q *SPSC[T]) Cap() int { return len(q.buf) }

// Len returns the number of values in the queue. With the producer and
// consumer running it is a snapshot that may be stale on return.
func (q *SPSC[T]) Len() int {
	h := q.head.Load()
	t := q.tail.Load()
	if t < h { // head moved between the two loads
		return 0
	}
	return int(t - h)
}

// TryPush appends v and returns true, or returns false at once when the
// queue is full. Producer only. TryPush does not look at Close: a value
// pushed after Close may never be popped.
func (q *SPSC[T]) TryPush(v T) bool {
	t := q.tail.Load()
	if t-q.cachedHead == uint64(len(q.buf)) {
		q.cachedHead = q.head.Load()
		if t-q.cachedHead == uint64(len(q.buf)) {
			return false
		}
	}
	q.buf[t&q.mask] = v
	q.tail.Store(t + 1)
	q.notEmpty.wake()
	return true
}

// TryPop removes and returns the oldest value, or returns false at once
// when the queue is empty. Consumer only.
func (q *SPSC[T]) TryPop() (T, bool) {
	var zero T
	h := q.head.Load()
	if h == q.cachedTail {
		q.cachedTail = q.tail.Load()
		if h == q.cachedTail {
			return zero, false
		}
	}
	slot := &q.buf[h&q.mask]
	v := *slot
	*slot = zero
	q.head.Store(h + 1)
	q.notFull.wake()
	return v, true
}

// Push appends v, waiting while the queue is full. It returns ctx.Err()
// if ctx ends first and ErrClosed if the queue is closed while full; in
// both cases v was not pushed. Producer only.
func (q *SPSC[T]) Push(ctx context.Context, v T) error {
	for {
		if q.TryPush(v) {
			return nil
		}
		if q.closed.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		q.notFull.waiters.Add(1)
		if q.tail.Load()-q.head.Load() == uint64(len(q.buf)) && !q.closed.Load() {
			q.notFull.sleep(ctx)
		}
		q.notFull.waiters.Add(-1)
	}
}

// Pop removes and returns the oldest value, waiting while the queue is
// empty. It returns false once the queue is closed and empty. Consumer
// only.
func (q *SPSC[T]) Pop() (T, bool) {
	v, err := q.PopContext(context.Background())
	return v, err == nil
}

// PopContext is Pop that also gives up when ctx ends, returning ctx.Err().
// Values pushed before Close are all returned before ErrClosed.
func (q *SPSC[T]) PopContext(ctx context.Context) (T, error) {
	var zero T
	for {
		if v, ok := q.TryPop(); ok {
			return v, nil
		}
		if q.closed.Load() {
			// The producer may have pushed between TryPop and Close.
			if v, ok := q.TryPop(); ok {
				return v, nil
			}
			return zero, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		q.notEmpty.waiters.Add(1)
		if q.tail.Load() == q.head.Load() && !q.closed.Load() {
			q.notEmpty.sleep(ctx)
		}
		q.notEmpty.waiters.Add(-1)
	}
}

// Close releases every goroutine blocked in Push or Pop. Afterwards Pop
// returns the values still queued and then false, and Push returns
// ErrClosed instead of waiting. Close is normally called by the producer
// after its last push; then no value is lost. Close is idempotent.
func (q *SPSC[T]) Close() {
	q.once.Do(func() {
		q.closed.Store(true)
		q.notEmpty.wake()
		q.notFull.wake()
	})
}
