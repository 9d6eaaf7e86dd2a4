package metrics

import (
	"math"
	"sync/atomic"
)

// cacheLine is larger than x86's 64 bytes so the padding also holds on
// CPUs with 128-byte lines or adjacent-line prefetch (as in package drop).
const cacheLine = 128

// Counter is a count that only goes up. Add and Inc are one atomic add:
// no lock, no allocation, safe from any goroutine, so a Counter may be
// incremented on the packet path. Each Counter sits alone on its cache
// line, so two goroutines counting different things never share one.
type Counter struct {
	n atomic.Uint64
	_ [cacheLine - 8]byte
}

// Add adds n.
func (c *Counter) Add(n uint64) { c.n.Add(n) }

// Inc adds one.
func (c *Counter) Inc() { c.n.Add(1) }

// Value is the current count.
func (c *Counter) Value() uint64 { return c.n.Load() }

// Gauge is a value that goes up and down. Set and Value are one atomic
// operation; Add is a compare-and-swap loop. None allocates.
type Gauge struct {
	bits atomic.Uint64
	_    [cacheLine - 8]byte
}

// Set sets the value.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds d (negative to subtract).
func (g *Gauge) Add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Value is the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }
