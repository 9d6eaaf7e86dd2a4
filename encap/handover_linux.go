package encap

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/poller"
)

// DupFile returns a duplicate of the socket's descriptor for another
// process to take over (Adopt): the socket stays bound, and the datagrams
// waiting in its receive queue stay there, as long as one duplicate is
// open. The caller closes it once it is handed on. From here on Close does
// not shut the socket down (see Close).
func (c *Conn) DupFile() (*os.File, error) {
	c.shared.Store(true)
	nfd, err := poller.Dup(c.raw)
	if err != nil {
		return nil, fmt.Errorf("encap: %w", err)
	}
	return os.NewFile(uintptr(nfd), "udp "+c.local.String()), nil
}

// Adopt builds a Conn on a bound UDP socket another process opened and
// handed over (DupFile there), keeping its options (SO_REUSEPORT, DF, TTL,
// buffers); cfg.Addr, ReusePort and SocketBuffer are ignored, cfg.GRO and
// cfg.SelfPolled are as for Listen. Close does not shut the socket down,
// which the other process may still read (see Close). Adopt takes
// ownership of f.
func Adopt(cfg Config, f *os.File) (*Conn, error) {
	defer f.Close()
	if !cfg.SelfPolled {
		pc, err := net.FilePacketConn(f) // a duplicate, non-blocking on the poller
		if err != nil {
			return nil, fmt.Errorf("encap: adopt socket: %w", err)
		}
		udp, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return nil, fmt.Errorf("encap: adopt socket: %T is not a UDP socket", pc)
		}
		return netConn(cfg, udp)
	}
	fd, local, err := dupUDP(f)
	if err != nil {
		return nil, fmt.Errorf("encap: adopt socket: %w", err)
	}
	sf, err := poller.NewFile(fd, "udp:"+local.String())
	if err != nil {
		return nil, fmt.Errorf("encap: adopt socket: %w", err)
	}
	c, err := selfPolledConn(cfg, sf, local)
	if err == nil {
		c.shared.Store(true)
	}
	return c, err
}

// dupUDP duplicates f's descriptor after checking that it is a bound IPv4
// or IPv6 UDP socket.
func dupUDP(f *os.File) (fd int, local netip.AddrPort, err error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, local, err
	}
	var opErr error
	cerr := raw.Control(func(orig uintptr) {
		var typ int
		if typ, opErr = unix.GetsockoptInt(int(orig), unix.SOL_SOCKET, unix.SO_TYPE); opErr != nil || typ != unix.SOCK_DGRAM {
			opErr = fmt.Errorf("not a datagram socket (%v)", opErr)
			return
		}
		if local, opErr = boundAddr(int(orig)); opErr != nil {
			return
		}
		fd, opErr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, local, cerr
	}
	if opErr != nil {
		return -1, local, opErr
	}
	if err := unix.SetNonblock(fd, true); err != nil { // it is already, in a predecessor's hands
		unix.Close(fd)
		return -1, local, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return fd, local, nil
}

// Disarm connects the socket to its own address, before its last Close
// when no successor takes it over. A process still holding a duplicate (a
// hand-over client that never finished) then receives nothing from the
// peers, and a socket bound to the same address and port later (a
// restart, SO_REUSEPORT) receives every datagram: the kernel's lookup
// scores a connected socket out for datagrams from any other source, and
// skips it when it picks a socket of a SO_REUSEPORT group.
func (c *Conn) Disarm() error {
	addr := c.local.Addr()
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(c.local.Port()), Addr: addr.As16()}
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Port: int(c.local.Port()), Addr: addr.As4()}
	}
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { err = unix.Connect(int(fd), sa) }); cerr != nil {
		return fmt.Errorf("encap: %w", cerr)
	}
	return os.NewSyscallError("connect", err)
}
