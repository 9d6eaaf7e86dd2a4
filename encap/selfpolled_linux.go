package encap

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/poller"
)

// selfPolled is the state of a Conn opened with Config.SelfPolled.
type selfPolled struct {
	on     bool
	closed atomic.Bool
	shared atomic.Bool // another process may hold the socket: no shutdown
}

// listenSelfPolled opens the socket with system calls of its own: net's
// sockets are always on Go's poller, whose thread would then wake for
// every datagram.
func listenSelfPolled(cfg Config, addr netip.AddrPort, v6 bool, bufSize int) (*Conn, error) {
	family, typ, proto := unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP
	if v6 {
		family = unix.AF_INET6
	}
	if cfg.Encap == IPIP {
		typ, proto = unix.SOCK_RAW, unix.IPPROTO_IPIP
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("encap: %w", os.NewSyscallError("socket", err))
	}
	local, err := bindSelfPolled(fd, cfg, addr, v6, bufSize)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("encap: listen %v: %w", addr, err)
	}
	// A blocking fd stays off the poller in os.NewFile; the File only
	// keeps the descriptor open while Hold or an operation uses it.
	f := os.NewFile(uintptr(fd), strings.ToLower(cfg.Encap.String())+":"+local.String())
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("encap: %w", err)
	}
	return selfPolledConn(cfg, f, local)
}

// selfPolledConn sets up a SelfPolled Conn on f, a bound non-blocking
// socket off Go's poller.
func selfPolledConn(cfg Config, f *os.File, local netip.AddrPort) (*Conn, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("encap: %w", err)
	}
	c := newConn(cfg, f, raw, local)
	c.on = true
	return c, nil
}

func bindSelfPolled(fd int, cfg Config, addr netip.AddrPort, v6 bool, bufSize int) (netip.AddrPort, error) {
	if err := setSocketOptions(fd, cfg, v6, bufSize); err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.Sockaddr
	if !v6 {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	} else {
		// IPv6 only, as net's udp6 sockets: the IPv4 socket keeps the port's IPv4 half.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return netip.AddrPort{}, os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return netip.AddrPort{}, os.NewSyscallError("bind", err)
	}
	return boundAddr(fd)
}

// boundAddr is the address a socket is bound to.
func boundAddr(fd int) (netip.AddrPort, error) {
	got, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, errNotInet
}

// Hold lends fn the descriptor of a SelfPolled Conn, kept open until fn
// returns even if Close runs meanwhile. Close makes it readable (a thread
// waiting on it wakes, and its next ReadBatch fails). It returns an error
// matching net.ErrClosed after Close.
func (c *Conn) Hold(fn func(fd int)) error {
	if !c.on {
		return fmt.Errorf("encap: Hold on %v: the socket is not SelfPolled", c.local)
	}
	if c.closed.Load() {
		return net.ErrClosed
	}
	if err := c.raw.Control(func(fd uintptr) { fn(int(fd)) }); err != nil {
		return fmt.Errorf("encap: %w", net.ErrClosed)
	}
	return nil
}

// wake ends the waits on a SelfPolled socket before Close: shutdown(2)
// makes it readable (for an unbound UDP socket the kernel says ENOTCONN
// but still wakes every poller).
func (c *Conn) wake() {
	if !c.on || c.closed.Swap(true) || c.shared.Load() {
		return
	}
	c.raw.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RD) }) //nolint:errcheck // see above
}

// do runs one ReadBatch or WriteBatch operation through the data path's
// retry loop (poller.Op): on a SelfPolled socket a read takes what is
// ready without waiting and a write waits for room (poller.Op's
// full-buffer rule); otherwise through Go's netpoller, which waits in
// both directions. errno is the system call's that ended the operation.
func (c *Conn) do(write bool, op *poller.Op) (unix.Errno, error) {
	if !c.on {
		return op.Polled(c.raw, write)
	}
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	var errno unix.Errno
	var err error
	if write {
		errno, err = op.Write(c.raw)
	} else {
		_, errno, err = op.Try(c.raw)
	}
	if err != nil {
		return 0, net.ErrClosed
	}
	return errno, nil
}
