package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Batch writes routes, neighbours and fdb entries many per system call:
// the messages of a batch go to the kernel in one sendmsg, which processes
// them in order, and the answers come back together. netlink.Handle makes
// a round trip per entry (a send, a wait in the Go scheduler's poller, a
// 64 KB receive buffer each), which made programming the thousands of
// peers of a large cluster's start-up slow (BENCHMARKS.md, "Choices
// measured in the code").
// Only the writes flannel's backends make are encoded here (replace of a
// unicast route with a gateway, set of a permanent neighbour or fdb
// entry); Flush reports each message's error to its callback.
//
// A Batch works in the network namespace of the thread that creates it;
// it is not safe for concurrent use.
type Batch struct {
	fd      int
	seq     uint32
	buf     []byte
	pending []func(error) // by seq - first
	first   uint32
	rbuf    []byte
}

// batchMessages bounds a sendmsg: the answers of a batch must fit in the
// socket's receive buffer, each an skb of its own.
const batchMessages = 256

// NewBatch opens the batch's netlink socket in the calling thread's
// namespace.
func NewBatch() (*Batch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Answers carry only the failed message's header, and up to 4 MB of
	// them may queue (ignored where the limit is lower: batches are small).
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)   //nolint:errcheck // an optimisation
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) //nolint:errcheck // see batchMessages
	return &Batch{fd: fd, seq: 1, first: 1, rbuf: make([]byte, 256<<10)}, nil
}

// Close closes the socket.
func (b *Batch) Close() { unix.Close(b.fd) }

// RouteReplace queues the replace of a unicast route via a gateway (the
// only kind flannel's kernel backends write per peer).
func (b *Batch) RouteReplace(r *netlink.Route, done func(error)) error {
	if r.Dst == nil || r.Gw == nil {
		return errors.New("batch: only routes with a destination and a gateway")
	}
	fam, dst := ipFamily(r.Dst.IP)
	_, gw := ipFamily(r.Gw)
	ones, _ := r.Dst.Mask.Size()
	if fam == unix.AF_INET && len(r.Dst.Mask) == net.IPv6len {
		ones -= 96
	}
	msg := b.begin(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	protocol := uint8(r.Protocol)
	if protocol == 0 {
		protocol = unix.RTPROT_BOOT
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
	msg = append(msg, byte(fam), byte(ones), 0, 0, byte(min(table, 255)), protocol, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST)
	msg = binary.NativeEndian.AppendUint32(msg, uint32(r.Flags))
	msg = attr(msg, unix.RTA_DST, dst)
	msg = attr(msg, unix.RTA_GATEWAY, gw)
	msg = attr(msg, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(r.LinkIndex)))
	if table > 255 {
		msg = attr(msg, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, uint32(table)))
	}
	return b.end(msg, done)
}

// NeighSet queues the set (create or replace) of a neighbour, or of an
// fdb entry (Family AF_BRIDGE), with its IP and link-layer address.
func (b *Batch) NeighSet(n *netlink.Neigh, done func(error)) error {
	if n.IP == nil || n.HardwareAddr == nil {
		return errors.New("batch: only neighbours with an IP and a link-layer address")
	}
	_, ip := ipFamily(n.IP)
	msg := b.begin(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	// struct ndmsg: family, pad, pad, ifindex, state, flags, type.
	msg = append(msg, byte(n.Family), 0, 0, 0)
	msg = binary.NativeEndian.AppendUint32(msg, uint32(n.LinkIndex))
	msg = binary.NativeEndian.AppendUint16(msg, uint16(n.State))
	msg = append(msg, byte(n.Flags), byte(n.Type))
	msg = attr(msg, unix.NDA_DST, ip)
	msg = attr(msg, unix.NDA_LLADDR, n.HardwareAddr)
	return b.end(msg, done)
}

func ipFamily(ip net.IP) (int, []byte) {
	if v4 := ip.To4(); v4 != nil {
		return unix.AF_INET, v4
	}
	return unix.AF_INET6, ip.To16()
}

// begin starts a message: its header, the length filled in by end.
func (b *Batch) begin(typ uint16, flags uint16) []byte {
	msg := make([]byte, unix.SizeofNlMsghdr, 64)
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], b.seq)
	return msg
}

func (b *Batch) end(msg []byte, done func(error)) error {
	if done == nil {
		done = func(error) {}
	}
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	b.buf = append(b.buf, msg...)
	b.pending = append(b.pending, done)
	b.seq++
	if len(b.pending) >= batchMessages {
		return b.Flush()
	}
	return nil
}

// attr appends a netlink attribute, padded to 4 bytes.
func attr(msg []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	msg = binary.NativeEndian.AppendUint16(msg, uint16(l))
	msg = binary.NativeEndian.AppendUint16(msg, typ)
	msg = append(msg, data...)
	for len(msg)%4 != 0 {
		msg = append(msg, 0)
	}
	return msg
}

// Flush sends the queued messages and waits for the kernel's answer to
// each, calling its callback with nil or the kernel's error. The error
// returned is the socket's: then the callbacks of the messages without
// an answer get it too.
func (b *Batch) Flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	pending, first := b.pending, b.first
	b.pending, b.first = nil, b.seq
	err := b.exchange(pending, first)
	b.buf = b.buf[:0]
	if err != nil {
		for _, done := range pending {
			if done != nil {
				done(err)
			}
		}
	}
	return err
}

func (b *Batch) exchange(pending []func(error), first uint32) error {
	if err := unix.Sendto(b.fd, b.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	left := len(pending)
	for left > 0 {
		n, _, err := unix.Recvfrom(b.fd, b.rbuf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(b.rbuf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - first)
			if m.Header.Type != unix.NLMSG_ERROR || i < 0 || i >= len(pending) || pending[i] == nil || len(m.Data) < 4 {
				continue
			}
			var kerr error
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				kerr = unix.Errno(-code)
			}
			done := pending[i]
			pending[i] = nil
			left--
			done(kerr)
		}
	}
	return nil
}

// NewBatchAt opens a Batch in the network namespace ns (a test's).
func NewBatchAt(ns netns.NsHandle) (*Batch, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return nil, err
	}
	b, err := NewBatch()
	if serr := netns.Set(orig); serr != nil {
		panic(fmt.Sprintf("kernel: cannot return to the original namespace: %v", serr)) // the thread would serve others in ns
	}
	return b, err
}

// Batcher hands a kernel backend a Batch for the event batches big enough
// to gain from one (a start-up, a burst), opened once and kept. A nil
// Batcher never batches.
type Batcher struct {
	open   func() (*Batch, error)
	b      *Batch
	broken bool // opening failed: per-entry writes from then on
}

// MinBatch is the smallest event batch written through a Batch.
const MinBatch = 16

// NewBatcher returns a Batcher opening its Batch with open.
func NewBatcher(open func() (*Batch, error)) *Batcher { return &Batcher{open: open} }

// For returns the Batch for a batch of n events, or nil: too few, or no
// Batch can be had (logged once; the entries are then written one by one).
func (r *Batcher) For(n int, log *slog.Logger) *Batch {
	if r == nil || r.broken || n < MinBatch {
		return nil
	}
	if r.b == nil {
		b, err := r.open()
		if err != nil {
			r.broken = true
			log.Warn("cannot batch netlink writes; writing each entry alone", "error", err)
			return nil
		}
		r.b = b
	}
	return r.b
}

// Flush sends what b holds (b may be nil); a socket error has already
// been reported to each entry's callback, and is logged once here.
func (r *Batcher) Flush(b *Batch, log *slog.Logger) {
	if b == nil {
		return
	}
	if err := b.Flush(); err != nil {
		log.Warn("batched netlink writes failed; the reconcile pass retries them", "error", err)
	}
}
