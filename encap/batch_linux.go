package encap

import (
	"fmt"
	"log/slog"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/poller"
)

const (
	// maxGSOSegments is the kernel's UDP_MAX_SEGMENTS on older kernels
	// (newer ones allow 128); one sendmsg carries at most this many.
	maxGSOSegments = 64
	// maxGSOBytes is the largest UDP payload of one coalesced send.
	maxGSOBytes = 65535 - 20 - 8
)

// segmentCmsgSpace is the control buffer for one UDP_SEGMENT (a uint16).
var segmentCmsgSpace = unix.CmsgSpace(2)

// groCmsgSpace is the control buffer of one received message: the
// kernel's UDP_GRO message carries the segment size as an int.
var groCmsgSpace = unix.CmsgSpace(4)

// groSize returns the UDP_GRO segment size in a received control buffer,
// 0 when there is none (the datagram was not coalesced).
func groSize(oob []byte) int {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		// Len is 32 bits on 32-bit platforms, 64 bits elsewhere.
		if uint64(h.Len) < uint64(unix.CmsgLen(0)) || uint64(h.Len) > uint64(len(oob)) {
			return 0
		}
		data := oob[unix.CmsgLen(0):h.Len]
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO {
			switch len(data) {
			case 4:
				return int(*(*int32)(unsafe.Pointer(&data[0])))
			case 2:
				return int(*(*uint16)(unsafe.Pointer(&data[0])))
			}
			return 0
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

// ReadBatch blocks until at least one datagram is ready, then receives, in
// one recvmmsg, every ready datagram up to len(msgs). For each of the
// returned n it sets msgs[i].N and msgs[i].Addr (the sender) and fills
// msgs[i].Buf[:N], and msgs[i].Off where the inner packet starts (after
// the outer header an IPIP socket receives). A datagram larger than its
// Buf is dropped (N = 0) and counted (flannelu_udp_truncated_datagrams_total). The caller owns the
// Bufs; ReadBatch keeps no reference after it returns.
func (c *Conn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	op := &c.rx
	op.prepare(msgs)
	errno, err := c.do(false, &op.op)
	n := op.n
	for i := 0; i < n; i++ {
		m, h := &msgs[i], &op.hdrs[i]
		m.N = int(h.Len)
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			m.N = 0
			c.truncated.Add(1)
		}
		m.Addr, _ = parseSockaddr(sockaddrBytes(&op.names[i], h.Hdr.Namelen))
		m.Off = 0
		if op.ipip {
			m.Off = outerLen(m.Buf[:m.N])
		}
		m.GSOSize = 0
		if op.gro {
			m.GSOSize = groSize(op.oob[i*groCmsgSpace : i*groCmsgSpace+int(h.Hdr.Controllen)])
		}
	}
	op.release(len(msgs))
	if err != nil {
		return 0, fmt.Errorf("encap: read: %w", err)
	}
	if errno != 0 {
		return 0, fmt.Errorf("encap: recvmmsg: %w", errno)
	}
	return n, nil
}

// WriteBatch sends each msgs[i].Head and Buf[:N] as one datagram to
// msgs[i].Addr and returns how many were sent. With GSO (Offloads),
// consecutive messages to the same Addr of equal Len (the last may be
// shorter) go in one sendmsg, whose iovecs are each message's Head and
// Buf[:N] in turn; the wire still carries one datagram per message. When a message
// is refused (an invalid Addr or N, EMSGSIZE above the path MTU with DF
// set, ...) WriteBatch returns the count before it and the error: msgs[n]
// is the refused one, and the caller may drop it and send msgs[n+1:]. An
// IPIP socket sends the outer header of each message (putOuterHeader)
// before its Head and Buf.
func (c *Conn) WriteBatch(msgs []Message) (int, error) {
	valid, verr := validate(msgs, c.v6, c.ipip)
	n, err := c.send(msgs[:valid])
	if err != nil {
		return n, err
	}
	return n, verr
}

// validate returns the length of the valid prefix of msgs and, if it is
// shorter than msgs, what is wrong with the next message. Destinations
// must be of the socket's family (v6), with a port unless the socket is
// IPIP, which needs an inner IPv4 packet to derive its header from.
func validate(msgs []Message, v6, ipip bool) (int, error) {
	for i := range msgs {
		m := &msgs[i]
		if m.N < 0 || m.N > len(m.Buf) {
			return i, fmt.Errorf("encap: message %d: N=%d outside its %d-byte Buf", i, m.N, len(m.Buf))
		}
		if ipip && !isInnerIPv4(innerStart(m)) {
			return i, fmt.Errorf("encap: message %d: an IPIP socket carries IPv4 packets only", i)
		}
		if isIPv6(m.Addr.Addr()) != v6 || !m.Addr.Addr().IsValid() || (m.Addr.Port() == 0 && !ipip) {
			return i, fmt.Errorf("encap: message %d: destination %v is not an %s address and port", i, m.Addr, familyName(v6))
		}
	}
	return len(msgs), nil
}

func (c *Conn) send(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	gso := c.gso.Load()
	op := &c.tx
	op.prepare(msgs, gso, c.v6)
	errno, err := c.do(true, &op.op)
	sent := op.msgsSent()
	failedGroup := op.groupLen(op.sent)
	op.release(len(msgs))
	if err != nil {
		return sent, fmt.Errorf("encap: write: %w", err)
	}
	if errno == 0 {
		return sent, nil
	}
	if gso && failedGroup > 1 && errno == unix.EIO {
		// The egress device cannot segment (seen with some NICs and
		// checksum settings): send one datagram per message from now on.
		c.gso.Store(false)
		slog.Warn("encap: UDP GSO send failed; sending one datagram per message", "error", errno)
		more, err := c.send(msgs[sent:])
		return sent + more, err
	}
	return sent, fmt.Errorf("encap: send to %v: %w", msgs[sent].Addr, errno)
}

// recvOp is the preallocated state of ReadBatch; step is its system call.
type recvOp struct {
	op    poller.Op
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	gro   bool
	ipip  bool   // an IPIP socket: Off is the outer header's length
	oob   []byte // groCmsgSpace per message, when gro
	count int
	n     int
}

func (op *recvOp) prepare(msgs []Message) {
	if len(msgs) > len(op.hdrs) {
		op.hdrs = make([]unix.Mmsghdr, len(msgs))
		op.iovs = make([]unix.Iovec, len(msgs))
		op.names = make([]sockaddr, len(msgs))
		op.oob = make([]byte, len(msgs)*groCmsgSpace)
	}
	for i := range msgs {
		setIovec(&op.iovs[i], msgs[i].Buf)
		op.hdrs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&op.names[i])),
			Namelen: unix.SizeofSockaddrInet6,
			Iov:     &op.iovs[i],
		}}
		op.hdrs[i].Hdr.SetIovlen(1)
		if op.gro {
			op.hdrs[i].Hdr.Control = &op.oob[i*groCmsgSpace]
			op.hdrs[i].Hdr.SetControllen(groCmsgSpace)
		}
	}
	op.count, op.n = len(msgs), 0
}

// step receives what is ready with one recvmmsg.
func (op *recvOp) step(fd uintptr) (bool, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&op.hdrs[0])), uintptr(op.count), 0, 0, 0)
	if e != 0 {
		return false, e
	}
	op.n = int(r)
	return true, 0
}

// release drops the references to the caller's buffers.
func (op *recvOp) release(n int) {
	for i := range n {
		op.iovs[i].Base = nil
	}
}

// sendOp is the preallocated state of WriteBatch; step is its system
// call. A group is the run of messages one mmsghdr carries (one without
// GSO).
type sendOp struct {
	op     poller.Op
	hdrs   []unix.Mmsghdr
	iovs   []unix.Iovec // up to three per message: the IPIP header, Head, Buf[:N]
	names  []sockaddr
	outer  [][OuterHeaderLen]byte // IPIP: each message's outer header
	oob    []byte
	ends   []int // ends[g]: index after the last message of group g
	groups int
	sent   int // groups sent so far

	ipip bool // an IPIP socket: an outer header per message
}

func (op *sendOp) prepare(msgs []Message, gso, v6 bool) {
	if len(msgs) > len(op.hdrs) {
		op.hdrs = make([]unix.Mmsghdr, len(msgs))
		op.iovs = make([]unix.Iovec, 3*len(msgs))
		op.names = make([]sockaddr, len(msgs))
		if op.ipip {
			op.outer = make([][OuterHeaderLen]byte, len(msgs))
		}
		op.oob = make([]byte, len(msgs)*segmentCmsgSpace)
		op.ends = make([]int, len(msgs))
	}
	g, iov := 0, 0
	for i := 0; i < len(msgs); g++ {
		end := i + 1
		if gso {
			end = groupEnd(msgs, i)
		}
		first := iov
		for j := i; j < end; j++ {
			if op.ipip {
				putOuterHeader(&op.outer[j], innerStart(&msgs[j]), msgs[j].Addr.Addr().As4())
				setIovec(&op.iovs[iov], op.outer[j][:])
				iov++
			}
			if len(msgs[j].Head) > 0 {
				setIovec(&op.iovs[iov], msgs[j].Head)
				iov++
			}
			setIovec(&op.iovs[iov], msgs[j].Buf[:msgs[j].N])
			iov++
		}
		namelen := putSockaddr(&op.names[g], msgs[i].Addr, v6)
		h := &op.hdrs[g]
		*h = unix.Mmsghdr{Hdr: unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&op.names[g])),
			Namelen: namelen,
			Iov:     &op.iovs[first],
		}}
		h.Hdr.SetIovlen(iov - first)
		if end-i > 1 {
			oob := op.oob[g*segmentCmsgSpace : (g+1)*segmentCmsgSpace]
			putSegmentCmsg(oob, uint16(msgs[i].Len()))
			h.Hdr.Control = &oob[0]
			h.Hdr.SetControllen(len(oob))
		}
		op.ends[g] = end
		i = end
	}
	op.groups, op.sent = g, 0
}

// groupEnd returns the end of the GSO run starting at msgs[i]: same
// destination, same size (a shorter one ends the run), within the
// kernel's segment and byte limits. Its iovecs, two per message at most
// (128), stay far below the kernel's UIO_MAXIOV (1024).
func groupEnd(msgs []Message, i int) int {
	size, dst := msgs[i].Len(), msgs[i].Addr
	if size == 0 {
		return i + 1
	}
	total, j := size, i+1
	for ; j < len(msgs) && j-i < maxGSOSegments; j++ {
		m := &msgs[j]
		n := m.Len()
		if m.Addr != dst || n == 0 || n > size || total+n > maxGSOBytes {
			break
		}
		total += n
		if n < size {
			return j + 1
		}
	}
	return j
}

func putSegmentCmsg(oob []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = size
}

// step sends the groups not sent yet with one sendmmsg.
func (op *sendOp) step(fd uintptr) (bool, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&op.hdrs[op.sent])), uintptr(op.groups-op.sent), 0, 0, 0)
	if e != 0 {
		return false, e
	}
	op.sent += int(r)
	return op.sent == op.groups, 0
}

// msgsSent is the number of messages in the groups sent so far.
func (op *sendOp) msgsSent() int {
	if op.sent == 0 {
		return 0
	}
	return op.ends[op.sent-1]
}

// groupLen is the number of messages in group g, 0 past the last.
func (op *sendOp) groupLen(g int) int {
	if g >= op.groups {
		return 0
	}
	start := 0
	if g > 0 {
		start = op.ends[g-1]
	}
	return op.ends[g] - start
}

func (op *sendOp) release(n int) {
	for i := range 3 * n {
		op.iovs[i].Base = nil
	}
}

func setIovec(iov *unix.Iovec, b []byte) {
	iov.Base = nil
	if len(b) > 0 {
		iov.Base = &b[0]
	}
	iov.SetLen(len(b))
}
