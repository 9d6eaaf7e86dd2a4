// Package trace is flannelu's debug mode: a human-readable line per
// forwarded or dropped packet, and optionally a pcap file that tcpdump and
// Wireshark read, costing nothing when tracing is off.
//
// The forwarder holds a *Tracer that is nil when tracing is off, so "off"
// costs one nil check at the call site:
//
//	if tr != nil {
//		tr.Packet(drop.Outside, pkt, peer, trace.Forwarded)
//	}
//
// When on, Packet copies the packet into a preallocated slot and returns;
// it never blocks and never allocates. A background goroutine
// decodes the slots (github.com/gopacket/gopacket) and writes the lines and
// the pcap records.
package trace

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/metrics"
)

// Defaults for zero Options fields.
const (
	DefaultRate    = 100  // lines per second
	DefaultSnaplen = 2048 // bytes kept per packet: a whole 1500-byte-MTU packet
	DefaultSlots   = 1024 // packets in flight between Packet and the writer
)

// Options configures a Tracer. At least one of Out and Pcap must be set.
type Options struct {
	// Out receives one human-readable line per packet, rate-limited.
	Out io.Writer
	// Rate is the most lines per second written to Out (default
	// DefaultRate); a negative Rate means no limit. Lines over the limit
	// are counted and reported as "... N lines suppressed".
	Rate int
	// Burst is how many lines may be written back to back before Rate
	// applies (default: Rate).
	Burst int
	// Pcap, if set, receives a pcap file (link type raw IP) of every
	// traced packet, not rate-limited: only running out of slots drops
	// records.
	Pcap io.Writer
	// Snaplen is how many bytes of each packet are kept (default
	// DefaultSnaplen, 64..65535). Lines need only the headers; the pcap
	// file gets exactly these bytes.
	Snaplen int
	// Slots is how many packets may wait for the writer (default
	// DefaultSlots, 1..65536). Memory use is Slots*Snaplen bytes.
	Slots int
	// Now is the clock for packet timestamps; tests inject a fixed one.
	// By default a packet's time is New's wall-clock time plus the
	// monotonic time elapsed since: one clock read per packet instead of
	// time.Now's two, and immune to clock steps while tracing.
	Now func() time.Time
	// Logger receives write errors (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives flannelu_trace_dropped_records_total (Dropped);
	// nil exports it nowhere.
	Metrics *metrics.Registry
}

// slot holds one packet on its way to the writer; buf is allocated once in
// New.
type slot struct {
	rec record
	buf []byte
}

// Tracer records packets. Packet is safe from any number of goroutines;
// Close from any one.
type Tracer struct {
	now   func() time.Time // nil: base + monotonic elapsed
	base  time.Time
	slots []slot
	// Slot indices move free -> (Packet) -> full -> (writer) -> free.
	// Both channels hold every index, so a send never blocks. They cost a
	// traced packet a little more than a lock-free ring would, but the
	// writer's formatting bounds tracing anyway (BENCHMARKS.md, "Choices
	// measured in the code").
	free, full chan uint32

	closed  atomic.Bool
	stop    chan struct{} // closed by Close: wakes a parked writer
	dropped *metrics.Counter

	// Owned by the writer goroutine until done is closed.
	dec     *decoder
	limit   limiter
	line    []byte
	out     *bufio.Writer
	pcap    *pcapgo.Writer
	pcapBuf *bufio.Writer
	outErr  error
	pcapErr error
	log     *slog.Logger

	closeOnce sync.Once
	done      chan struct{}
}

// New validates opts, writes the pcap file header (if Pcap is set) and
// starts the writer goroutine. Call Close to stop it.
func New(opts Options) (*Tracer, error) {
	t, err := newTracer(opts)
	if err != nil {
		return nil, err
	}
	go t.run()
	return t, nil
}

// withDefaults fills zero fields and rejects out-of-range ones.
func (o Options) withDefaults() (Options, error) {
	if o.Out == nil && o.Pcap == nil {
		return o, errors.New("trace: neither Out nor Pcap is set")
	}
	if o.Rate == 0 {
		o.Rate = DefaultRate
	}
	if o.Burst < 0 {
		return o, errors.New("trace: negative Burst")
	}
	if o.Burst == 0 {
		o.Burst = max(o.Rate, 1)
	}
	if o.Snaplen == 0 {
		o.Snaplen = DefaultSnaplen
	}
	if o.Snaplen < 64 || o.Snaplen > 65535 {
		return o, errors.New("trace: Snaplen must be in 64..65535")
	}
	if o.Slots == 0 {
		o.Slots = DefaultSlots
	}
	if o.Slots < 0 || o.Slots > 1<<16 {
		return o, errors.New("trace: Slots must be in 1..65536")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// newTracer is New without the writer goroutine.
func newTracer(opts Options) (*Tracer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	n := opts.Slots
	t := &Tracer{
		now:   opts.Now,
		base:  time.Now(),
		slots: make([]slot, n),
		free:  make(chan uint32, n),
		full:  make(chan uint32, n),
		stop:  make(chan struct{}),
		dec:   newDecoder(),
		limit: newLimiter(opts.Rate, opts.Burst),
		line:  make([]byte, 0, 256),
		log:   opts.Logger,
		done:  make(chan struct{}),
		dropped: opts.Metrics.Counter("flannelu_trace_dropped_records_total",
			"Packets --trace did not record (no line, no pcap record) because its writer fell behind; the packets themselves were forwarded or dropped as usual."),
	}
	mem := make([]byte, n*opts.Snaplen)
	for i := range t.slots {
		t.slots[i].buf = mem[i*opts.Snaplen : (i+1)*opts.Snaplen : (i+1)*opts.Snaplen]
		t.free <- uint32(i)
	}
	if opts.Out != nil {
		t.out = bufio.NewWriterSize(opts.Out, 32<<10)
	}
	if opts.Pcap != nil {
		t.pcapBuf = bufio.NewWriterSize(opts.Pcap, 64<<10)
		t.pcap = pcapgo.NewWriter(t.pcapBuf)
		if err := t.pcap.WriteFileHeader(uint32(opts.Snaplen), layers.LinkTypeRaw); err != nil {
			return nil, err
		}
		if err := t.pcapBuf.Flush(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Packet records one packet travelling in direction dir, exchanged with
// peer (the zero AddrPort if there is none), with the forwarder's verdict:
// Forwarded or a drop reason label.
//
// It copies up to Snaplen bytes of pkt, so the caller keeps ownership of
// pkt and may reuse it as soon as Packet returns. Packet never blocks and
// allocates nothing; when no slot is free the packet is not traced and
// counted in Dropped. After Close it does nothing. verdict should be a
// constant or long-lived string: the tracer keeps a reference until the
// line is written.
func (t *Tracer) Packet(dir drop.Direction, pkt []byte, peer netip.AddrPort, verdict string) {
	t.PacketParts(dir, nil, pkt, peer, verdict)
}

// PacketParts is Packet for a packet that lies in two pieces, head then
// rest (a segment's rewritten headers and its payload, still in the
// super-packet it was cut from): the trace shows them as one packet.
func (t *Tracer) PacketParts(dir drop.Direction, head, rest []byte, peer netip.AddrPort, verdict string) {
	if t.closed.Load() {
		return
	}
	var i uint32
	select {
	case i = <-t.free:
	default:
		t.dropped.Add(1)
		return
	}
	s := &t.slots[i]
	var ts time.Time
	if t.now != nil {
		ts = t.now()
	} else {
		ts = t.base.Add(time.Since(t.base))
	}
	s.rec = record{
		ts:      ts,
		dir:     dir,
		peer:    peer,
		verdict: verdict,
		origLen: len(head) + len(rest),
	}
	n := copy(s.buf, head)
	s.rec.data = s.buf[:n+copy(s.buf[n:], rest)]
	t.full <- i // never blocks: full has room for every slot index
}

// Dropped returns how many packets were not traced because no slot was
// free (the writer could not keep up).
func (t *Tracer) Dropped() uint64 { return t.dropped.Value() }

// Close stops tracing: it writes the packets already recorded, a final
// "... N lines suppressed" line if the rate limit withheld any, and
// flushes both writers. It returns the first write error of each writer.
// Close does not close Out or Pcap. It is safe to call more than once and
// concurrently with Packet.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		close(t.stop)
		<-t.done
		if n := t.Dropped(); n > 0 {
			t.log.Info("trace: packets not traced because the writer fell behind", "dropped", n)
		}
	})
	return errors.Join(t.outErr, t.pcapErr)
}

// The writer polls for records while packets are flowing and parks only
// after a quiet spell. Parking whenever none is queued would make each
// Packet that finds the writer asleep pay a goroutine wake-up, which is
// the forwarder's time; polling moves that cost to
// the writer, and parking keeps an idle tracer from using CPU.
const (
	pollInterval = time.Millisecond
	parkAfter    = 200 // empty polls (~200 ms) before parking
)

// run is the writer goroutine.
func (t *Tracer) run() {
	defer close(t.done)
	for idle := 0; ; {
		if t.drain() > 0 {
			idle = 0
		}
		t.sync()
		if t.closed.Load() && len(t.full) == 0 {
			break
		}
		if idle++; idle < parkAfter {
			time.Sleep(pollInterval)
			continue
		}
		select {
		case i := <-t.full:
			t.writeSlot(i)
			idle = 0
		case <-t.stop: // the next round drains what is left and stops
		}
	}
	if n := t.limit.suppressed; n > 0 {
		t.writeSuppressed(n)
	}
	t.sync()
}

// drain writes every record queued now and returns how many.
func (t *Tracer) drain() int {
	n := 0
	for {
		var i uint32
		select {
		case i = <-t.full:
		default:
			return n
		}
		t.writeSlot(i)
		// Show lines at least every 64 records under a steady stream.
		if n++; n%64 == 0 {
			t.sync()
		}
	}
}

// writeSlot writes slot i's record and gives the slot back to Packet.
func (t *Tracer) writeSlot(i uint32) {
	t.write(&t.slots[i].rec)
	t.free <- i
}

func (t *Tracer) write(r *record) {
	if t.pcap != nil && t.pcapErr == nil {
		ci := gopacket.CaptureInfo{Timestamp: r.ts, CaptureLength: len(r.data), Length: r.origLen}
		if err := t.pcap.WritePacket(ci, r.data); err != nil {
			t.failPcap(err)
		}
	}
	if t.out == nil || t.outErr != nil {
		return
	}
	ok, suppressed := t.limit.allow(r.ts)
	if !ok {
		return
	}
	if suppressed > 0 {
		t.writeSuppressed(suppressed)
	}
	t.line = t.dec.appendLine(t.line[:0], r)
	if _, err := t.out.Write(t.line); err != nil {
		t.failOut(err)
	}
}

func (t *Tracer) writeSuppressed(n uint64) {
	if t.out == nil || t.outErr != nil {
		return
	}
	t.line = append(t.line[:0], "... "...)
	t.line = appendUint(t.line, n)
	t.line = append(t.line, " lines suppressed\n"...)
	if _, err := t.out.Write(t.line); err != nil {
		t.failOut(err)
	}
}

// sync flushes both buffered writers.
func (t *Tracer) sync() {
	if t.out != nil && t.outErr == nil && t.out.Buffered() > 0 {
		if err := t.out.Flush(); err != nil {
			t.failOut(err)
		}
	}
	if t.pcapBuf != nil && t.pcapErr == nil && t.pcapBuf.Buffered() > 0 {
		if err := t.pcapBuf.Flush(); err != nil {
			t.failPcap(err)
		}
	}
}

// failOut and failPcap stop one output after its first error; the other
// keeps going. The error is logged once and returned by Close.
func (t *Tracer) failOut(err error) {
	t.outErr = err
	t.log.Warn("trace: writing lines failed; lines stop", "error", err)
}

func (t *Tracer) failPcap(err error) {
	t.pcapErr = err
	t.log.Warn("trace: writing pcap failed; pcap stops", "error", err)
}
