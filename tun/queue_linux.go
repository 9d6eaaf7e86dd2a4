package tun

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/poller"
)

// errStopped is a Read after Device.StopReads.
var errStopped = fmt.Errorf("tun: read: reads stopped: %w", os.ErrDeadlineExceeded)

// errShortSizes is returned when sizes cannot hold one size per buffer.
var errShortSizes = errors.New("tun: len(sizes) < len(bufs)")

// Queue is one file descriptor of a Device. One goroutine may Read while
// another Writes, but Read (and Write) must not be called concurrently with
// itself: the per-call state lives in the Queue so that no call allocates.
type Queue struct {
	dev     *Device
	file    *os.File
	raw     syscall.RawConn
	vnetHdr bool
	rd      readOp
	wr      writeOp
	wv      writevOp
}

// newQueue takes fd, a non-blocking queue descriptor, over: it is kept out
// of Go's netpoller (poller.NewFile), whose thread would otherwise wake
// for every packet, and the caller waits for readiness itself (Hold).
func newQueue(d *Device, fd int, vnetHdr bool) (*Queue, error) {
	f, err := poller.NewFile(fd, tunDevice)
	if err != nil {
		return nil, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	q := &Queue{dev: d, file: f, raw: raw, vnetHdr: vnetHdr}
	q.rd.vnetHdr, q.rd.truncated = vnetHdr, d.truncated
	q.rd.op.Bind(q.rd.step)
	q.wr.op.Bind(q.wr.step)
	q.wv.op.Bind(q.wv.step)
	q.wv.iovs = make([]unix.Iovec, 0, defaultParts)
	return q, nil
}

// Hold lends fn the queue's descriptor and the device's closing eventfd
// (readable once StopReads or Close was called), both kept open until fn
// returns, even if Close runs meanwhile, for fn to wait on (package
// poller). It returns an error matching os.ErrClosed after Close.
func (q *Queue) Hold(fn func(fd, closing int)) error {
	closing, err := q.dev.closing.SyscallConn()
	if err == nil {
		err = q.raw.Control(func(fd uintptr) {
			err = closing.Control(func(cfd uintptr) { fn(int(fd), int(cfd)) })
		})
	}
	if err != nil {
		return q.dev.closedOr("hold", err)
	}
	return nil
}

// BatchSize is how many buffers a caller should pass to Read and Write.
func (q *Queue) BatchSize() int { return DefaultBatchSize }

// Read reads, without waiting, every ready packet up to len(bufs), and
// returns how many it read: 0 when none is ready (the caller waits on the
// descriptor Hold lends it). Packet i is written to bufs[i][offset:] and
// its length stored in sizes[i]; the bytes before offset are left
// untouched as headroom for the caller's headers.
//
// len(sizes) must be >= len(bufs). The caller owns bufs and sizes; Read
// writes into them only during the call and keeps no reference. Each
// bufs[i][offset:] must hold a whole packet: the device MTU, or 65535+
// packet.VirtioNetHdrLen bytes in VnetHdr mode, where every packet starts
// with a virtio_net_hdr. The kernel silently truncates a packet larger than
// its buffer; outside VnetHdr mode Read detects that from the IP header,
// drops the packet and counts it (flannelu_tun_truncated_packets_total). After Device.Close,
// Read returns an error matching errors.Is(err, os.ErrClosed), after
// Device.StopReads one matching os.ErrDeadlineExceeded.
func (q *Queue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(sizes) < len(bufs) {
		return 0, errShortSizes
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if q.dev.stopped.Load() {
		return 0, errStopped
	}
	for i, b := range bufs {
		if offset < 0 || offset >= len(b) {
			return 0, fmt.Errorf("tun: read %s: buffer %d: offset %d leaves no room in %d bytes", q.dev.name, i, offset, len(b))
		}
	}
	op := &q.rd
	op.bufs, op.sizes, op.offset, op.n = bufs, sizes, offset, 0
	_, errno, err := op.op.Try(q.raw)
	n := op.n
	op.bufs, op.sizes = nil, nil // keep no reference to the caller's memory
	if err != nil {
		return n, q.dev.closedOr("read", err)
	}
	if n > 0 || errno == 0 {
		// A persistent read error shows up again on the next call.
		return n, nil
	}
	return 0, q.dev.closedOr("read", errno)
}

// Write writes each bufs[i][offset:] as one packet (starting with a
// virtio_net_hdr in VnetHdr mode) and returns how many were written. When
// the kernel rejects a packet (EINVAL for a malformed one, EIO while the
// interface is down, ...) Write stops and returns the count before it with
// the error: bufs[n] is the rejected packet, and the caller decides whether
// to drop it and call again with bufs[n+1:]. A write the kernel has no
// room for waits (poller.Op's rule). Write keeps no reference to bufs
// after it returns.
func (q *Queue) Write(bufs [][]byte, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	for i, b := range bufs {
		if offset < 0 || offset > len(b) {
			return 0, fmt.Errorf("tun: write %s: buffer %d: offset %d beyond %d-byte buffer", q.dev.name, i, offset, len(b))
		}
	}
	op := &q.wr
	op.bufs, op.offset, op.n = bufs, offset, 0
	errno, err := op.op.Write(q.raw)
	n := op.n
	op.bufs = nil
	if err != nil {
		return n, q.dev.closedOr("write", err)
	}
	if errno != 0 {
		return n, fmt.Errorf("tun: write %s packet %d (%d bytes): %w", q.dev.name, n, len(bufs[n])-offset, errno)
	}
	return n, nil
}

// WriteParts is Write for packets given in pieces: packet i is the
// concatenation of pkts[i]'s parts (in VnetHdr mode starting with the
// virtio_net_hdr), written with one writev, so that a caller can send a
// packet assembled from headers and payloads where they lie without
// copying them together. Errors and the returned count are as for Write.
// It keeps no reference to pkts after it returns and does not allocate
// for packets of up to 66 parts.
func (q *Queue) WriteParts(pkts [][][]byte) (int, error) {
	if len(pkts) == 0 {
		return 0, nil
	}
	op := &q.wv
	op.pkts, op.n = pkts, 0
	errno, err := op.op.Write(q.raw)
	n := op.n
	op.pkts = nil
	clear(op.iovs[:cap(op.iovs)]) // drop the references to the caller's memory
	if err != nil {
		return n, q.dev.closedOr("write", err)
	}
	if errno != 0 {
		size := 0
		for _, p := range pkts[n] {
			size += len(p)
		}
		return n, fmt.Errorf("tun: write %s packet %d (%d bytes in %d parts): %w",
			q.dev.name, n, size, len(pkts[n]), errno)
	}
	return n, nil
}

// defaultParts is the iovec room WriteParts starts with: a virtio header,
// a head packet and 64 merged payloads.
const defaultParts = 66

// readOp is the state of one Read.
type readOp struct {
	op        poller.Op
	vnetHdr   bool
	truncated *metrics.Counter
	bufs      [][]byte
	sizes     []int
	offset    int
	n         int
}

// step reads one packet; one the kernel truncated is dropped, counted.
func (op *readOp) step(fd uintptr) (bool, unix.Errno) {
	b := op.bufs[op.n][op.offset:]
	r, _, e := unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return false, e
	}
	if int(r) == len(b) && !op.vnetHdr && truncated(b) {
		op.truncated.Add(1) // a partial packet must not be forwarded
		return false, 0
	}
	op.sizes[op.n] = int(r)
	op.n++
	return op.n == len(op.bufs), 0
}

// writeOp is the state of one Write.
type writeOp struct {
	op     poller.Op
	bufs   [][]byte
	offset int
	n      int
}

// step writes one packet.
func (op *writeOp) step(fd uintptr) (bool, unix.Errno) {
	b := op.bufs[op.n][op.offset:]
	_, _, e := unix.Syscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return false, e
	}
	op.n++
	return op.n == len(op.bufs), 0
}

// writevOp is the state of one WriteParts.
type writevOp struct {
	op   poller.Op
	pkts [][][]byte
	iovs []unix.Iovec
	n    int
}

// step writes one packet's parts with writev.
func (op *writevOp) step(fd uintptr) (bool, unix.Errno) {
	op.iovs = op.iovs[:0]
	for _, p := range op.pkts[op.n] {
		if len(p) > 0 {
			iov := unix.Iovec{Base: &p[0]}
			iov.SetLen(len(p))
			op.iovs = append(op.iovs, iov)
		}
	}
	if len(op.iovs) == 0 {
		return true, unix.EINVAL // an empty packet, as write(2) of 0 bytes is refused
	}
	_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&op.iovs[0])), uintptr(len(op.iovs)))
	if e != 0 {
		return false, e
	}
	op.n++
	return op.n == len(op.pkts), 0
}
