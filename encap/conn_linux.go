package encap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/metrics"
)

// Conn is the encapsulation socket. One goroutine may ReadBatch while
// another WriteBatches; neither may be called concurrently with itself,
// because each keeps its preallocated system-call state in the Conn.
type Conn struct {
	closer io.Closer // the *net.UDPConn, or SelfPolled the *os.File
	raw    syscall.RawConn
	selfPolled

	local     netip.AddrPort
	v6        bool // an AF_INET6 socket: peers are IPv6 addresses
	ipip      bool // a raw IPIP socket (Config.Encap)
	gso       atomic.Bool
	gro       bool
	truncated *metrics.Counter
	rx        recvOp
	tx        sendOp
	lone      loneOp
}

// Listen opens the socket: bound to cfg.Addr, outgoing datagrams with DF
// set (IP_PMTUDISC_DO, which is what flanneld's sockets put on the wire;
// IPV6_PMTUDISC_DO for IPv6) and TTL (hop limit) 64, send/receive buffers
// of cfg.SocketBuffer. An IPv6 address makes an IPv6-only socket (the
// IPv6 underlay flanneld's udp backend never had), which can share the
// port with the IPv4 one. UDP GSO is used on send when the kernel supports
// it (Offloads). An IPIP socket (cfg.Encap) is a raw IPv4 socket of
// protocol 4 bound to the address, writing each outer header itself (see
// putOuterHeader).
func Listen(cfg Config) (*Conn, error) {
	addr := cfg.Addr.Addr()
	if !addr.IsValid() {
		return nil, fmt.Errorf("encap: listen address %v is not an IP address and port", cfg.Addr)
	}
	v6 := isIPv6(addr)
	if !v6 {
		addr = addr.Unmap()
	}
	if cfg.Encap == IPIP {
		if err := checkIPIP(cfg, addr); err != nil {
			return nil, err
		}
		cfg.Addr = netip.AddrPortFrom(addr, 0)
	}
	bufSize := cfg.SocketBuffer
	if bufSize == 0 {
		bufSize = DefaultSocketBuffer
	}
	if bufSize < 0 {
		return nil, fmt.Errorf("encap: socket buffer %d bytes is negative", bufSize)
	}
	if cfg.SelfPolled {
		return listenSelfPolled(cfg, netip.AddrPortFrom(addr, cfg.Addr.Port()), v6, bufSize)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var optErr error
		err := rc.Control(func(fd uintptr) { optErr = setSocketOptions(int(fd), cfg, v6, bufSize) })
		return errors.Join(err, optErr)
	}}
	network, address := "udp4", netip.AddrPortFrom(addr, cfg.Addr.Port()).String()
	switch {
	case cfg.Encap == IPIP:
		network, address = "ip4:4", addr.String()
	case v6:
		network = "udp6"
	}
	pc, err := lc.ListenPacket(context.Background(), network, address)
	if err != nil {
		return nil, fmt.Errorf("encap: %w", err)
	}
	return netConn(cfg, pc)
}

// netConn finishes Listen (and Adopt) on a bound socket of package net:
// a *net.UDPConn, or for IPIP a *net.IPConn.
func netConn(cfg Config, pc net.PacketConn) (*Conn, error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("encap: %T has no descriptor", pc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("encap: %w", err)
	}
	var local netip.AddrPort
	switch a := pc.LocalAddr().(type) {
	case *net.UDPAddr:
		local = a.AddrPort()
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		local = netip.AddrPortFrom(ip, 0)
	}
	if local.Addr().Is4In6() {
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	}
	return newConn(cfg, pc, raw, local), nil
}

// newConn sets up a Conn on an open, bound socket that closer closes; its
// family is local's.
func newConn(cfg Config, closer io.Closer, raw syscall.RawConn, local netip.AddrPort) *Conn {
	c := &Conn{closer: closer, raw: raw, local: local, v6: isIPv6(local.Addr()), truncated: cfg.Metrics.Counter("flannelu_udp_truncated_datagrams_total",
		"Datagrams the udp backend's sockets received that were larger than the receive buffer and were dropped.")}
	if cfg.Encap == IPIP {
		// A raw socket has neither UDP GSO nor GRO, and no port (its
		// name says the protocol there).
		c.local = netip.AddrPortFrom(local.Addr(), 0)
		c.ipip, c.rx.ipip, c.tx.ipip = true, true, true
	} else {
		c.gso.Store(probeGSO(raw))
		if cfg.GRO {
			c.gro = enableGRO(raw)
			c.rx.gro = c.gro
		}
	}
	c.rx.op.Bind(c.rx.step)
	c.tx.op.Bind(c.tx.step)
	c.lone.op.Bind(c.lone.step)
	c.lone.ipip = c.ipip
	return c
}

// setSocketOptions runs before bind: an IPIP socket's options, or a UDP
// socket's.
func setSocketOptions(fd int, cfg Config, v6 bool, bufSize int) error {
	if cfg.Encap == IPIP {
		return setIPIPOptions(fd, bufSize)
	}
	return setOptions(fd, cfg.ReusePort, v6, bufSize)
}

// setOptions runs before bind on a UDP socket.
func setOptions(fd int, reusePort, v6 bool, bufSize int) error {
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEPORT", err)
		}
	}
	if err := setPathOptions(fd, v6); err != nil {
		return err
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, bufSize); err != nil {
		return err
	}
	return setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, bufSize)
}

// setPathOptions sets DF (no fragmenting) and the outer TTL or hop limit.
func setPathOptions(fd int, v6 bool) error {
	level, mtu, pmtu, ttl := unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO, unix.IP_TTL
	if v6 {
		level, mtu, pmtu, ttl = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO, unix.IPV6_UNICAST_HOPS
	}
	if err := unix.SetsockoptInt(fd, level, mtu, pmtu); err != nil {
		return os.NewSyscallError("setsockopt MTU_DISCOVER", err)
	}
	if err := unix.SetsockoptInt(fd, level, ttl, OuterTTL); err != nil {
		return os.NewSyscallError("setsockopt TTL", err)
	}
	return nil
}

// isIPv6 reports whether a is a real IPv6 address (not IPv4-mapped).
func isIPv6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// setBuffer tries the root-only FORCE option first (it ignores the
// [rw]mem_max sysctls) and falls back to the capped one without
// CAP_NET_ADMIN.
func setBuffer(fd, force, plain, size int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); err == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return os.NewSyscallError("setsockopt socket buffer", err)
	}
	return nil
}

// probeGSO reports whether the kernel knows UDP_SEGMENT (Linux 4.18+).
func probeGSO(raw syscall.RawConn) bool {
	var err error
	if cerr := raw.Control(func(fd uintptr) {
		_, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// enableGRO turns on UDP_GRO (Linux 5.0+) and reports whether it took.
func enableGRO(raw syscall.RawConn) bool {
	var err error
	if cerr := raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// LocalAddr is the address the socket is bound to.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Offloads reports whether WriteBatch coalesces datagrams with UDP GSO and
// whether ReadBatch receives with UDP GRO (asked for with Config.GRO).
func (c *Conn) Offloads() (gso, gro bool) { return c.gso.Load(), c.gro }

// Close closes the socket; a blocked ReadBatch or WriteBatch returns an
// error matching errors.Is(err, net.ErrClosed). A SelfPolled socket is
// also shut down for reading, which wakes its pollers, unless another
// process may hold it too (DupFile, Adopt): shutdown acts on the socket,
// and would end that process's reads as well. Its pollers must then be
// woken otherwise (the udp backend stops its loops before closing).
func (c *Conn) Close() error {
	c.wake()
	return c.closer.Close()
}
