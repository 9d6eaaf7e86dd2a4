package drop

import (
	"bufio"
	"io"
	"strconv"
	"sync/atomic"
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
// copied after first use. All methods are safe for concurrent use and
// allocate nothing except WritePrometheus.
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

// WritePrometheus writes all counters to w in the Prometheus text
// exposition format, every (direction, reason) pair including zeros so
// rate() sees each series from the start:
//
//	<prefix>_dropped_packets_total{direction="outside",reason="unknown_peer"} 3
//	<prefix>_forwarded_packets_total{direction="inside"} 10
//	<prefix>_forwarded_bytes_total{direction="inside"} 840
//
// The values are read one by one, not as an atomic snapshot. It returns
// the first write error.
func (c *Counters) WritePrometheus(w io.Writer, prefix string) error {
	bw := bufio.NewWriter(w)
	var num [20]byte
	metric := func(name, help string) {
		bw.WriteString("# HELP " + prefix + name + " " + help + "\n")
		bw.WriteString("# TYPE " + prefix + name + " counter\n")
	}
	sample := func(name string, dir Direction, reason string, v uint64) {
		bw.WriteString(prefix + name + `{direction="` + dir.String() + `"`)
		if reason != "" {
			bw.WriteString(`,reason="` + reason + `"`)
		}
		bw.WriteString("} ")
		bw.Write(strconv.AppendUint(num[:0], v, 10))
		bw.WriteByte('\n')
	}
	metric("_dropped_packets_total", "Packets the forwarder dropped, by direction and reason.")
	for d := range numDirections {
		for r := range numReasons {
			sample("_dropped_packets_total", d, r.String(), c.Get(d, r))
		}
	}
	metric("_forwarded_packets_total", "Packets the forwarder forwarded, by direction.")
	for d := range numDirections {
		p, _ := c.Forwarded(d)
		sample("_forwarded_packets_total", d, "", p)
	}
	metric("_forwarded_bytes_total", "Bytes of inner IPv4 packets the forwarder forwarded, by direction.")
	for d := range numDirections {
		_, n := c.Forwarded(d)
		sample("_forwarded_bytes_total", d, "", n)
	}
	return bw.Flush()
}
