// Package encap is the underlay end of the userspace forwarder: the
// socket that carries one of flannel's encapsulations. UDP (the udp
// backend): UDP from port 8285 to port 8285 whose payload is the raw inner
// IP packet, no header; a Conn is of one family, IPv4 (flannel's
// underlay) or IPv6 (flannelu's IPv6 underlay, an IPv6-only socket on the
// same port). IPIP (the ipip backend where the kernel has no ipip
// device): IP protocol 4 through a raw IPv4 socket, the inner IPv4 packet
// right after an outer IPv4 header, as the kernel's ipip device sends it.
//
// ReadBatch and WriteBatch move many datagrams per system call
// (recvmmsg/sendmmsg) and allocate nothing in steady state.
package encap

import (
	"net/netip"

	"github.com/flannelu/flannelu/internal/metrics"
)

// DefaultSocketBuffer is the send and receive buffer size Listen asks for
// when Config.SocketBuffer is 0.
const DefaultSocketBuffer = 4 << 20

// OuterTTL is the TTL of every outgoing datagram, as flanneld sends.
const OuterTTL = 64

// Encapsulation is what wraps each inner packet on the wire.
type Encapsulation uint8

const (
	// UDP is flannel's udp backend: a UDP datagram to the peer's port,
	// its payload the inner packet. Overhead 28 bytes (48 over IPv6).
	UDP Encapsulation = iota
	// IPIP is flannel's ipip backend (RFC 2003, IP protocol 4): the inner
	// IPv4 packet after an outer IPv4 header and nothing else. Overhead 20
	// bytes; IPv4 only; no ports (Config.Addr's and Message.Addr's are
	// ignored).
	IPIP
)

// OuterHeaderLen is the outer IPv4 header an IPIP socket writes: no
// options.
const OuterHeaderLen = 20

func (e Encapsulation) String() string {
	if e == IPIP {
		return "IPIP"
	}
	return "UDP"
}

// Config says where the socket listens and how it is tuned.
type Config struct {
	// Encap is the encapsulation the socket carries, UDP by default.
	Encap Encapsulation
	// Addr is the local address and port: the host's public IP (or IPv6
	// address) and Backend.Port (8285). Its family is the socket's. Port 0
	// picks a free port (tests). An IPIP socket takes only the IPv4
	// address: it receives the protocol-4 packets sent to it.
	Addr netip.AddrPort
	// ReusePort sets SO_REUSEPORT so that several Conns (one per
	// forwarder goroutine) can share Addr, the kernel spreading flows.
	// Not with IPIP: every raw socket gets a copy of every packet.
	ReusePort bool
	// SocketBuffer is the size in bytes of the send and receive buffers,
	// DefaultSocketBuffer when 0. As root it is forced past the
	// net.core.[rw]mem_max limits (SO_RCVBUFFORCE); otherwise the kernel
	// caps it there.
	SocketBuffer int
	// GRO asks the kernel to coalesce received datagrams of one sender
	// (UDP_GRO): ReadBatch then returns runs of equal-sized datagrams in
	// one Message, GSOSize set. Buffers must be 64 KiB to receive them
	// whole.
	GRO bool
	// SelfPolled keeps the socket out of Go's netpoller: ReadBatch never
	// waits (it returns 0 when nothing is ready), and the caller waits for
	// readiness itself on the descriptor Conn.Hold lends it (the udp
	// backend's one-thread loop, package poller). WriteBatch still waits
	// when the send buffer is full.
	SelfPolled bool
	// Metrics receives flannelu_udp_truncated_datagrams_total
	// (datagrams larger than their buffer); nil exports it nowhere.
	Metrics *metrics.Registry
}

// Message is one datagram. ReadBatch fills Buf[:N] and sets Addr to the
// sender; WriteBatch sends Head followed by Buf[:N] to Addr (on an IPIP
// socket after the outer header it writes). The caller owns Head and Buf.
type Message struct {
	// Head, when not empty, goes on the wire before Buf[:N] in the same
	// datagram, gathered by the kernel from where it lies (a segment's
	// rewritten headers before its payload, which stays in the buffer it
	// was read into). ReadBatch ignores it.
	Head []byte
	Buf  []byte
	N    int
	// Off is where the inner packet starts in Buf[:N], set by ReadBatch:
	// 0 for UDP, the outer header's length on an IPIP socket (which
	// receives whole IP packets), N when that header is not valid IPv4.
	// WriteBatch ignores it.
	Off  int
	Addr netip.AddrPort
	// GSOSize is set by ReadBatch on a GRO socket when Buf[:N] holds
	// several datagrams from Addr back to back: each GSOSize bytes, the
	// last one possibly shorter. 0 means Buf[:N] is one datagram.
	// WriteBatch ignores it.
	GSOSize int
}

// Datagram returns the i-th datagram of a received message and whether
// there is one: a message without GSOSize holds exactly one.
func (m *Message) Datagram(i int) ([]byte, bool) {
	if m.GSOSize <= 0 {
		return m.Buf[m.Off:m.N], i == 0
	}
	start := i * m.GSOSize
	if start >= m.N {
		return nil, false
	}
	return m.Buf[start:min(start+m.GSOSize, m.N)], true
}

// Len is the size of the payload WriteBatch sends for m: Head and
// Buf[:N] (an IPIP socket adds its 20-byte header).
func (m *Message) Len() int { return len(m.Head) + m.N }
