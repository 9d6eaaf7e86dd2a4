package wireguard

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/flannelu/flannelu/encap"
)

// bind is wireguard-go's UDP side (conn.Bind) on flannelu's encap
// sockets: recvmmsg with UDP GRO and sendmmsg with UDP GSO, like
// wireguard-go's own StdNetBind, but without its two allocations per
// received datagram (a net.UDPAddr from x/net's ReadBatch and an
// endpoint): a sender's endpoint is made once and found again by its
// address. One IPv4 socket on 0.0.0.0:port and one IPv6-only socket on
// [::]:port, as the kernel's WireGuard and StdNetBind listen. Unlike
// StdNetBind it does not pin the source address of replies (IP_PKTINFO):
// they leave with the one the route picks, which on a host with one
// underlay address per family (flannel's) is the same.
type bind struct {
	mu     sync.Mutex // Open, Close, SetMark
	v4, v6 *bindSock
	mark   uint32
}

// bindSock is one family's socket. Send is called from many goroutines
// (one per peer); each receive function from one.
type bindSock struct {
	c      *encap.Conn
	sendMu sync.Mutex
	tx     []encap.Message
	rx     []encap.Message
	eps    map[netip.AddrPort]*endpoint
}

// maxEndpoints bounds a socket's endpoint cache: senders at more
// addresses than that (a flood of spoofed ones) make it start over.
const maxEndpoints = 4096

// groSegments is how many datagrams the kernel coalesces at most into one
// received message (UDP_GRO); wireguard-go hands over conn.IdealBatchSize
// buffers, so at most IdealBatchSize/groSegments messages are read at once,
// into the last buffers, and split into all of them.
const groSegments = 64

var _ conn.Bind = (*bind)(nil)

func newBind() *bind { return &bind{} }

// Open listens on port in both families (0: a free port, the same in
// both); a host without IPv6 listens in IPv4 only.
func (b *bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.v4 != nil || b.v6 != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	v4, err := listenBind(netip.AddrPortFrom(netip.IPv4Unspecified(), port), b.mark)
	if err != nil {
		return nil, 0, err
	}
	port = v4.c.LocalAddr().Port()
	v6, err := listenBind(netip.AddrPortFrom(netip.IPv6Unspecified(), port), b.mark)
	switch {
	case errors.Is(err, syscall.EAFNOSUPPORT):
		v6 = nil
	case err != nil:
		v4.c.Close()
		return nil, 0, err
	}
	b.v4, b.v6 = v4, v6
	fns := []conn.ReceiveFunc{v4.receive}
	if v6 != nil {
		fns = append(fns, v6.receive)
	}
	return fns, port, nil
}

func listenBind(addr netip.AddrPort, mark uint32) (*bindSock, error) {
	c, err := encap.Listen(encap.Config{Addr: addr, GRO: true})
	if err != nil {
		return nil, err
	}
	// Outer packets may be fragmented, as the kernel's WireGuard and
	// StdNetBind let them be (encap sets DF for flannel's udp backend).
	err = c.Control(func(fd int) error {
		if addr.Addr().Is4() {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
	})
	if err == nil && mark != 0 {
		err = setMark(c, mark)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &bindSock{c: c, tx: make([]encap.Message, conn.IdealBatchSize), rx: make([]encap.Message, conn.IdealBatchSize),
		eps: map[netip.AddrPort]*endpoint{}}
	return s, nil
}

func setMark(c *encap.Conn, mark uint32) error {
	return c.Control(func(fd int) error {
		return os.NewSyscallError("setsockopt SO_MARK", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)))
	})
}

// Close closes the sockets; blocked receive functions return net.ErrClosed.
func (b *bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, s := range []*bindSock{b.v4, b.v6} {
		if s != nil {
			errs = append(errs, s.c.Close())
		}
	}
	b.v4, b.v6 = nil, nil
	return errors.Join(errs...)
}

// SetMark sets SO_MARK (wg's fwmark) on the sockets, now and when opened.
func (b *bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mark = mark
	for _, s := range []*bindSock{b.v4, b.v6} {
		if s != nil {
			if err := setMark(s.c, mark); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bind) BatchSize() int { return conn.IdealBatchSize }

func (b *bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &endpoint{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// Send sends bufs to ep, one datagram each, coalesced with UDP GSO where
// they are of one size.
func (b *bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	s := b.v4
	if e.ap.Addr().Is6() {
		s = b.v6
	}
	b.mu.Unlock()
	if s == nil {
		return net.ErrClosed
	}
	return s.send(bufs, e.ap)
}

func (s *bindSock) send(bufs [][]byte, to netip.AddrPort) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for len(bufs) > 0 {
		msgs := s.tx[:min(len(bufs), len(s.tx))]
		for i := range msgs {
			msgs[i] = encap.Message{Buf: bufs[i], N: len(bufs[i]), Addr: to}
		}
		n, err := s.c.WriteBatch(msgs)
		clear(msgs) // keep no reference to wireguard-go's buffers
		if err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	return nil
}

// receive reads datagrams into packets: with GRO, at most a few messages
// into the last buffers, each a run of datagrams that is split into the
// buffers from the first on (as StdNetBind does); every datagram gets its
// sender's endpoint.
func (s *bindSock) receive(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	readAt := len(packets) - max(1, len(packets)/groSegments)
	msgs := s.rx[:len(packets)-readAt]
	for i := range msgs {
		msgs[i] = encap.Message{Buf: packets[readAt+i]}
	}
	n, err := s.c.ReadBatch(msgs)
	if err != nil {
		clear(msgs)
		if errors.Is(err, net.ErrClosed) {
			return 0, net.ErrClosed
		}
		return 0, err
	}
	k := 0
	for i := 0; i < n && k < len(packets); i++ {
		m := &msgs[i]
		ep := s.endpoint(m.Addr)
		for j := 0; k < len(packets); j++ {
			d, ok := m.Datagram(j)
			if !ok || len(d) == 0 { // none left, or a datagram too large for its buffer
				break
			}
			// Into the next buffer: the runs are read into the last ones,
			// and k reaches a run's own buffer at most at its last datagram.
			if &d[0] != &packets[k][0] {
				d = packets[k][:copy(packets[k], d)]
			}
			sizes[k], eps[k] = len(d), ep
			k++
		}
	}
	clear(msgs)
	return k, nil
}

// endpoint is the cached endpoint of a sender.
func (s *bindSock) endpoint(ap netip.AddrPort) *endpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if e, ok := s.eps[ap]; ok {
		return e
	}
	if len(s.eps) >= maxEndpoints {
		clear(s.eps)
	}
	e := &endpoint{ap}
	s.eps[ap] = e
	return e
}

// endpoint is a peer's address. It keeps no source address (see bind).
type endpoint struct{ ap netip.AddrPort }

func (e *endpoint) ClearSrc()           {}
func (e *endpoint) SrcToString() string { return "" }
func (e *endpoint) DstToString() string { return e.ap.String() }
func (e *endpoint) DstIP() netip.Addr   { return e.ap.Addr() }
func (e *endpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstToBytes is the address and port for the cookie's MAC, as
// StdNetEndpoint gives them.
func (e *endpoint) DstToBytes() []byte {
	b, _ := e.ap.MarshalBinary()
	return b
}
