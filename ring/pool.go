package ring

import (
	"context"
	"errors"
	"net/netip"
)

// Batch is a set of packet buffers that moves between pipeline stages as
// one unit, so that a stage pays the hand-off cost once per batch rather
// than once per packet.
//
// Bufs[i] is a full-size buffer (len == cap == the pool's bufSize); the
// stage that fills a batch stores the packet length in Sizes[i], the peer
// in Addrs[i], and the number of packets in N. Bufs, Sizes and Addrs all
// have the pool's batch length; code must not re-slice or append to them,
// since the next holder of the batch expects the same shape.
type Batch struct {
	Bufs  [][]byte
	Sizes []int
	Addrs []netip.AddrPort
	N     int

	pool  *Pool
	inUse bool
}

// Pool is a fixed set of batches recycled through a free ring. The
// producing stage takes an empty batch with Get, fills it and pushes the
// *Batch to the next stage through an SPSC; the consuming stage pops it,
// uses it and gives it back with Put. Nothing is allocated after NewPool.
//
// The free ring is an SPSC: exactly one goroutine calls Get/TryGet and
// exactly one goroutine calls Put (usually the last stage). Between Get
// and Put a batch belongs to whoever holds the pointer; after Put the
// caller must not touch it or its buffers again.
type Pool struct {
	free    *SPSC[*Batch]
	batches []*Batch
}

// NewPool allocates count batches of batchLen buffers of bufSize bytes
// each, all from one backing array. count, batchLen and bufSize must be
// positive.
func NewPool(count, batchLen, bufSize int) (*Pool, error) {
	if count <= 0 || batchLen <= 0 || bufSize <= 0 {
		return nil, errors.New("ring: pool count, batch length and buffer size must be positive")
	}
	if count > 1<<20 || batchLen > 1<<16 || bufSize > 1<<20 || count*batchLen*bufSize > 1<<32 {
		return nil, errors.New("ring: pool too large")
	}
	p := &Pool{free: NewSPSC[*Batch](count), batches: make([]*Batch, count)}
	mem := make([]byte, count*batchLen*bufSize)
	for i := range p.batches {
		b := &Batch{
			Bufs:  make([][]byte, batchLen),
			Sizes: make([]int, batchLen),
			Addrs: make([]netip.AddrPort, batchLen),
			pool:  p,
		}
		for j := range b.Bufs {
			off := (i*batchLen + j) * bufSize
			b.Bufs[j] = mem[off : off+bufSize : off+bufSize]
		}
		p.batches[i] = b
		p.free.TryPush(b)
	}
	return p, nil
}

// Len returns the number of batches in the pool, free or in use.
func (p *Pool) Len() int { return len(p.batches) }

// Free returns the number of batches waiting in the free ring.
func (p *Pool) Free() int { return p.free.Len() }

// TryGet returns an empty batch (N == 0), or false at once when every
// batch is in use.
func (p *Pool) TryGet() (*Batch, bool) {
	b, ok := p.free.TryPop()
	if ok {
		b.inUse = true
	}
	return b, ok
}

// Get returns an empty batch, waiting while every batch is in use. It
// returns ctx.Err() if ctx ends first, or ErrClosed after Close.
func (p *Pool) Get(ctx context.Context) (*Batch, error) {
	b, err := p.free.PopContext(ctx)
	if err != nil {
		return nil, err
	}
	b.inUse = true
	return b, nil
}

// Put returns b to the free ring, emptied (N = 0). b must come from this
// pool's Get or TryGet and not have been put back since; Put panics on a
// foreign or double put, since either would hand one buffer to two
// stages at once.
func (p *Pool) Put(b *Batch) {
	if b.pool != p || !b.inUse {
		panic("ring: Put of a batch that is not from this pool or already put")
	}
	b.inUse = false
	b.N = 0
	p.free.TryPush(b) // cannot fail: the ring holds every batch
}

// Close releases a goroutine waiting in Get; Get then fails with
// ErrClosed once the free ring is empty.
func (p *Pool) Close() { p.free.Close() }
