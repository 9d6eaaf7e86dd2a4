package testbed

import (
	"encoding/binary"
	"testing"
)

// TestH2CounterCountsCalls feeds a client's HTTP/2 stream (preface,
// SETTINGS, three HEADERS with DATA between them, a WINDOW_UPDATE) to the
// counter in pieces of every size: each HEADERS frame is one call,
// whatever the reads cut.
func TestH2CounterCountsCalls(t *testing.T) {
	frame := func(typ byte, payload int) []byte {
		f := make([]byte, 9+payload)
		binary.BigEndian.PutUint32(f, uint32(payload)<<8)
		f[3] = typ
		f[4+1] = 1 // a stream id byte, any
		return f
	}
	stream := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	for _, f := range [][]byte{frame(0x4, 18), frame(0x1, 40), frame(0x0, 300), frame(0x1, 9), frame(0x8, 4),
		frame(0x0, 0), frame(0x1, 1), frame(0x0, 70000)} {
		stream = append(stream, f...)
	}
	for size := 1; size <= 64; size++ {
		var h h2Counter
		var calls int64
		for i := 0; i < len(stream); i += size {
			calls += h.feed(stream[i:min(i+size, len(stream))])
		}
		if calls != 3 {
			t.Fatalf("reads of %d bytes: %d calls, want 3", size, calls)
		}
	}
}
