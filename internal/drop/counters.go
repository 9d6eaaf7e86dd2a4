package drop

import (
	"sync/atomic"

	"github.com/flannelu/flannelu/internal/metrics"
)

// cacheLine is larger than the 64 bytes of x86 so the padding also holds on
// CPUs with 128-byte lines or adjacent-line prefetch.
const cacheLine = 128

// counter is one atomic count alone on its cache line, so the two
// directions' goroutines never invalidate each other's lines.
type counter struct {
	n atomic.Uint64
	_ [cacheLine - 8]byte
}

// forwarded holds one direction's forwarded packets and bytes; they share a
// line because the same goroutine updates both together.
type forwarded struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
	_       [cacheLine - 16]byte
}

// Counters counts drops per direction and reason, and forwarded packets and
// bytes per direction. The zero value is ready to use; it must not be
// copied after first use. All methods are safe for concurrent use, and
// all but Register allocate nothing.
type Counters struct {
	_         [cacheLine]byte // keep neighbours in the enclosing struct off our lines
	dropped   [numDirections][numReasons]counter
	forwarded [numDirections]forwarded
}

// Add counts n packets dropped in direction dir for reason r. An
// out-of-range dir or r is a caller bug; it is ignored rather than
// panicking on the packet path.
func (c *Counters) Add(dir Direction, r Reason, n uint64) {
	if dir >= numDirections || r >= numReasons {
		return
	}
	c.dropped[dir][r].n.Add(n)
}

// Get returns the drops counted for dir and r, 0 for out-of-range values.
func (c *Counters) Get(dir Direction, r Reason) uint64 {
	if dir >= numDirections || r >= numReasons {
		return 0
	}
	return c.dropped[dir][r].n.Load()
}

// AddForwarded counts packets forwarded in dir totalling bytes bytes
// (inner IPv4 packet lengths).
func (c *Counters) AddForwarded(dir Direction, packets, bytes uint64) {
	if dir >= numDirections {
		return
	}
	c.forwarded[dir].packets.Add(packets)
	c.forwarded[dir].bytes.Add(bytes)
}

// Forwarded returns the packets and bytes forwarded in dir.
func (c *Counters) Forwarded(dir Direction) (packets, bytes uint64) {
	if dir >= numDirections {
		return 0, 0
	}
	return c.forwarded[dir].packets.Load(), c.forwarded[dir].bytes.Load()
}

// Register exports the counters in reg (a nil reg exports nothing):
//
//	flannelu_dropped_packets_total{direction="outside",reason="unknown_peer"} 3
//	flannelu_forwarded_packets_total{direction="inside"} 10
//	flannelu_forwarded_bytes_total{direction="inside"} 840
//
// Every direction is paired with every counted reason, zeros included, so
// rate() sees each series from the start. The values are read at scrape
// time, one by one, not as an atomic snapshot.
func (c *Counters) Register(reg *metrics.Registry) {
	dropped := reg.CounterVec("flannelu_dropped_packets_total",
		"Packets the udp backend's forwarder dropped, by direction (inside: TUN to UDP, outside: UDP to TUN) and reason.",
		"direction", "reason")
	packets := reg.CounterVec("flannelu_forwarded_packets_total",
		"Packets the udp backend's forwarder forwarded, by direction (inside: TUN to UDP, outside: UDP to TUN).", "direction")
	bytes := reg.CounterVec("flannelu_forwarded_bytes_total",
		"Bytes of inner IPv4 packets the udp backend's forwarder forwarded, by direction.", "direction")
	for d := range numDirections {
		for r := range numReasons {
			if r.counted() {
				dropped.Func(func() uint64 { return c.Get(d, r) }, d.String(), r.String())
			}
		}
		packets.Func(func() uint64 { p, _ := c.Forwarded(d); return p }, d.String())
		bytes.Func(func() uint64 { _, n := c.Forwarded(d); return n }, d.String())
	}
}
