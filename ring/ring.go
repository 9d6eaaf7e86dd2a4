package ring

import (
	"context"
	"errors"
	"sync/atomic"
)

// ErrClosed is returned by the blocking helpers once a ring is closed and,
// for a consumer, drained.
var ErrClosed = errors.New("ring: closed")

// cacheLine is the padding between fields written by different goroutines.
// 128 bytes rather than 64 covers the adjacent-line prefetcher of x86 and
// the 128-byte lines of some arm64 cores.
const cacheLine = 128

// roundPow2 returns the smallest power of two >= n, with a minimum of 1.
// It returns 0 when n is too large to round.
func roundPow2(n int) int {
	c := 1
	for c < n {
		c <<= 1
		if c <= 0 {
			return 0
		}
	}
	return c
}

// parker lets goroutines sleep until another goroutine makes progress.
// The waking side pays one atomic load when nobody sleeps.
//
// Protocol (sequentially consistent atomics make it race-free): a sleeper
// increments waiters, re-checks its condition, and only then blocks on ch;
// a waker first publishes its progress (an atomic store) and then loads
// waiters. Either the sleeper sees the progress or the waker sees the
// sleeper. ch has room for one token, so a wake never blocks; a stale
// token only causes one spurious wake-up, which callers tolerate by
// looping.
type parker struct {
	waiters atomic.Int32
	ch      chan struct{}
}

func newParker() parker { return parker{ch: make(chan struct{}, 1)} }

// wake releases one sleeper, if any.
func (p *parker) wake() {
	if p.waiters.Load() != 0 {
		select {
		case p.ch <- struct{}{}:
		default:
		}
	}
}

// sleep blocks until a wake token arrives or ctx ends. With a context
// that never ends it is a plain channel receive, the cheapest park the
// runtime offers. Close wakes sleepers through the same token after
// setting the closed flag, so there is one channel to wait on, not two.
func (p *parker) sleep(ctx context.Context) {
	if done := ctx.Done(); done != nil {
		select {
		case <-p.ch:
		case <-done:
		}
		return
	}
	<-p.ch
}
