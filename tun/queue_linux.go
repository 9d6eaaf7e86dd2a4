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

// errNoRoom is a SelfPolled write the kernel refused with EAGAIN.
var errNoRoom = fmt.Errorf("tun: write: %w", unix.EAGAIN)

// errStopped is a SelfPolled Read after Device.StopReads.
var errStopped = fmt.Errorf("tun: read: reads stopped: %w", os.ErrDeadlineExceeded)

// errShortSizes is returned when sizes cannot hold one size per buffer.
var errShortSizes = errors.New("tun: len(sizes) < len(bufs)")

// Queue is one file descriptor of a Device. One goroutine may Read while
// another Writes, but Read (and Write) must not be called concurrently with
// itself: the per-call state lives in the Queue so that no call allocates.
type Queue struct {
	dev        *Device
	file       *os.File
	raw        syscall.RawConn
	vnetHdr    bool
	selfPolled bool // Config.SelfPolled: never wait, see do
	rd         readOp
	wr         writeOp
	wv         writevOp
}

func newQueue(d *Device, fd int, vnetHdr, selfPolled bool) (*Queue, error) {
	f, err := queueFile(fd, selfPolled)
	if err != nil {
		return nil, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	q := &Queue{dev: d, file: f, raw: raw, vnetHdr: vnetHdr, selfPolled: selfPolled}
	// Bind the callbacks once: a fresh closure per call would allocate.
	q.rd.vnetHdr, q.rd.truncated = vnetHdr, d.truncated
	q.rd.fn = q.rd.drain
	q.wr.fn = q.wr.push
	q.wv.fn = q.wv.push
	q.rd.once.Bind(q.rd.fn)
	q.wr.once.Bind(q.wr.fn)
	q.wv.once.Bind(q.wv.fn)
	q.wv.iovs = make([]unix.Iovec, 0, defaultParts)
	return q, nil
}

// queueFile wraps fd (non-blocking) in a File, on Go's poller or, selfPolled,
// off it (os.NewFile would register it, and the poller's thread would then
// wake for every packet).
func queueFile(fd int, selfPolled bool) (*os.File, error) {
	if selfPolled {
		return poller.NewFile(fd, tunDevice)
	}
	return os.NewFile(uintptr(fd), tunDevice), nil
}

// Hold lends fn the queue's descriptor and the device's closing eventfd
// (readable once StopReads or Close was called) of a SelfPolled device, both kept open
// until fn returns, even if Close runs meanwhile. It returns an error
// matching os.ErrClosed after Close.
func (q *Queue) Hold(fn func(fd, closing int)) error {
	if !q.selfPolled {
		return fmt.Errorf("tun: Hold on %s: the device is not SelfPolled", q.dev.name)
	}
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

// do runs one operation's callback: through Go's poller, which waits
// while fn returns false (not ready), or, SelfPolled, once; then false
// means EAGAIN.
func (q *Queue) do(write bool, fn func(uintptr) bool, once *poller.Attempt) error {
	if q.selfPolled {
		done, err := once.Run(q.raw)
		if err == nil && write && !done {
			err = errNoRoom
		}
		return err
	}
	if write {
		return q.raw.Write(fn)
	}
	return q.raw.Read(fn)
}

// BatchSize is how many buffers a caller should pass to Read and Write.
func (q *Queue) BatchSize() int { return DefaultBatchSize }

// Read blocks until at least one packet is ready, then reads, without
// blocking again, every ready packet up to len(bufs). Packet i is written
// to bufs[i][offset:] and its length stored in sizes[i]; the bytes before
// offset are left untouched as headroom for the caller's headers. It
// returns the number of packets read.
//
// len(sizes) must be >= len(bufs). The caller owns bufs and sizes; Read
// writes into them only during the call and keeps no reference. Each
// bufs[i][offset:] must hold a whole packet: the device MTU, or 65535+
// packet.VirtioNetHdrLen bytes in VnetHdr mode, where every packet starts
// with a virtio_net_hdr. The kernel silently truncates a packet larger than
// its buffer; outside VnetHdr mode Read detects that from the IP header,
// drops the packet and counts it in Device.Truncated. After Device.Close,
// Read returns an error matching errors.Is(err, os.ErrClosed).
func (q *Queue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(sizes) < len(bufs) {
		return 0, errShortSizes
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if q.selfPolled && q.dev.stopped.Load() {
		return 0, errStopped
	}
	op := &q.rd
	op.bufs, op.sizes, op.offset, op.n, op.err = bufs, sizes, offset, 0, nil
	err := q.do(false, op.fn, &op.once)
	n, opErr := op.n, op.err
	op.bufs, op.sizes = nil, nil // keep no reference to the caller's memory
	if err != nil {
		return n, q.dev.closedOr("read", err)
	}
	if n > 0 || opErr == nil {
		// A persistent read error shows up again on the next call.
		return n, nil
	}
	return 0, q.dev.closedOr("read", opErr)
}

// Write writes each bufs[i][offset:] as one packet (starting with a
// virtio_net_hdr in VnetHdr mode) and returns how many were written. When
// the kernel rejects a packet (EINVAL for a malformed one, EIO while the
// interface is down, ...) Write stops and returns the count before it with
// the error: bufs[n] is the rejected packet, and the caller decides whether
// to drop it and call again with bufs[n+1:]. Write keeps no reference to
// bufs after it returns.
func (q *Queue) Write(bufs [][]byte, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	op := &q.wr
	op.bufs, op.offset, op.n, op.err = bufs, offset, 0, nil
	err := q.do(true, op.fn, &op.once)
	n, opErr := op.n, op.err
	op.bufs = nil
	if err != nil {
		return n, q.dev.closedOr("write", err)
	}
	if opErr != nil {
		return n, fmt.Errorf("tun: write %s packet %d (%d bytes): %w",
			q.dev.name, n, max(len(bufs[n])-offset, 0), opErr)
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
	op.pkts, op.n, op.err = pkts, 0, nil
	err := q.do(true, op.fn, &op.once)
	n, opErr := op.n, op.err
	op.pkts = nil
	op.release()
	if err != nil {
		return n, q.dev.closedOr("write", err)
	}
	if opErr != nil {
		size := 0
		for _, p := range pkts[n] {
			size += len(p)
		}
		return n, fmt.Errorf("tun: write %s packet %d (%d bytes in %d parts): %w",
			q.dev.name, n, size, len(pkts[n]), opErr)
	}
	return n, nil
}

// defaultParts is the iovec room WriteParts starts with: a virtio header,
// a head packet and 64 merged payloads.
const defaultParts = 66

// writevOp is the state of one WriteParts; push is its poller callback.
type writevOp struct {
	once poller.Attempt
	pkts [][][]byte
	iovs []unix.Iovec
	n    int
	err  error
	fn   func(fd uintptr) bool
}

// push writes packets in order with writev; on EAGAIN it asks the poller
// to wait and resumes where it stopped.
func (op *writevOp) push(fd uintptr) bool {
	for op.n < len(op.pkts) {
		op.iovs = op.iovs[:0]
		for _, p := range op.pkts[op.n] {
			if len(p) > 0 {
				iov := unix.Iovec{Base: &p[0]}
				iov.SetLen(len(p))
				op.iovs = append(op.iovs, iov)
			}
		}
		if len(op.iovs) == 0 {
			op.err = unix.EINVAL // an empty packet, as write(2) of 0 bytes is refused
			return true
		}
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&op.iovs[0])), uintptr(len(op.iovs)))
		switch e {
		case 0:
			op.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			op.err = e
			return true
		}
	}
	return true
}

// release drops the references to the caller's memory.
func (op *writevOp) release() {
	clear(op.iovs[:cap(op.iovs)])
}

// readOp is the state of one Read; drain is its poller callback.
type readOp struct {
	vnetHdr   bool
	truncated *metrics.Counter
	once      poller.Attempt
	bufs      [][]byte
	sizes     []int
	offset    int
	n         int
	err       error
	fn        func(fd uintptr) bool
}

// drain reads ready packets until the batch is full or the queue is empty.
// It returns false (wait for readability) only while nothing has been read.
func (op *readOp) drain(fd uintptr) bool {
	for op.n < len(op.bufs) {
		b := op.bufs[op.n]
		if op.offset < 0 || op.offset >= len(b) {
			op.err = fmt.Errorf("buffer %d: offset %d leaves no room in %d bytes", op.n, op.offset, len(b))
			return true
		}
		n, err := unix.Read(int(fd), b[op.offset:])
		switch err {
		case nil:
			if n == len(b)-op.offset && !op.vnetHdr && truncated(b[op.offset:]) {
				op.truncated.Add(1) // a partial packet must not be forwarded
				continue
			}
			op.sizes[op.n] = n
			op.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return op.n > 0
		default:
			op.err = err
			return true
		}
	}
	return true
}

// writeOp is the state of one Write; push is its poller callback.
type writeOp struct {
	once   poller.Attempt
	bufs   [][]byte
	offset int
	n      int
	err    error
	fn     func(fd uintptr) bool
}

// push writes packets in order; on EAGAIN it asks the poller to wait and
// resumes where it stopped.
func (op *writeOp) push(fd uintptr) bool {
	for op.n < len(op.bufs) {
		b := op.bufs[op.n]
		if op.offset < 0 || op.offset > len(b) {
			op.err = fmt.Errorf("offset %d beyond %d-byte buffer", op.offset, len(b))
			return true
		}
		_, err := unix.Write(int(fd), b[op.offset:])
		switch err {
		case nil:
			op.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			op.err = err
			return true
		}
	}
	return true
}
