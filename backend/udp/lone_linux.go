package udp

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
)

// A lone packet, what each turn of a request-response exchange carries,
// goes out with the plainest system call on the descriptor the loop
// holds: sendto for a datagram (to a peer of either family; for IPIP a
// sendmsg of the outer header and the packet), write for a
// packet into the TUN (from either socket's half). The batch calls
// (sendmmsg through encap.Conn, writev of the coalescer's parts through
// tun.Queue) add message headers, iovecs and a RawControl per call that
// one packet does not need. Measured in the
// pinned layout (BENCHMARKS.md, round five): forwarder CPU per round
// trip 189 against 209 µs and p50 against flanneld-udp 0.93x against
// 0.99x, medians of 12 interleaved pairs. Anything the plain call
// refuses (a full socket buffer, an unreachable peer) takes the batch
// path after it, which waits for room or counts the drop.

// sendLone sends m, a whole packet, on the held socket of its peer's
// family (sock for IPv4, sock6 for IPv6) with encap.Lone (sendto, or a
// two-part sendmsg for IPIP), and reports whether it went.
func (in *inside) sendLone(m *encap.Message) bool {
	v6 := !m.Addr.Addr().Is4()
	sock := in.sock
	if v6 {
		sock = in.sock6
	}
	if sock < 0 || !in.lone.Send(sock, in.encap, v6, m) {
		return false
	}
	in.drops.AddForwarded(drop.Inside, 1, uint64(m.N))
	return true
}

// writeLone writes the one packet gathered (o.pkts[0]) into the TUN with
// write, its zero virtio-net header put in the headroom before it, and
// reports whether it went. Only the first datagram of a message that is
// not a GRO run has that headroom.
func (o *outside) writeLone() bool {
	if o.tunFD < 0 || o.msgs[0].GSOSize != 0 {
		return false
	}
	p, b := o.pkts[0], o.bufs[0]
	// p lies in b, past the headroom (and an IPIP outer header): at
	// cap(b)-cap(p), which has room for the virtio-net header before it.
	at := cap(b) - cap(p)
	if len(p) == 0 || at < headroom || &p[0] != &b[at] {
		return false
	}
	frame := b[at-packet.VirtioNetHdrLen : at+len(p)]
	clear(frame[:packet.VirtioNetHdrLen])
	_, _, errno := unix.Syscall(unix.SYS_WRITE, uintptr(o.tunFD), uintptr(unsafe.Pointer(&frame[0])), uintptr(len(frame)))
	if errno != 0 {
		return false
	}
	o.drops.AddForwarded(drop.Outside, 1, uint64(len(p)))
	return true
}
