//go:build !linux

package encap

import (
	"errors"
	"net/netip"
	"os"
)

// ErrUnsupported is what Listen returns on systems other than Linux.
var ErrUnsupported = errors.New("encap: the batched UDP socket is only supported on Linux")

// Conn is the encapsulation socket; on this system none can be opened.
type Conn struct{}

// Listen fails: the socket is built on Linux's recvmmsg, sendmmsg and UDP
// GSO/GRO.
func Listen(Config) (*Conn, error) { return nil, ErrUnsupported }

// The methods below exist so that portable callers build; there is never a
// Conn to call them on.

func (c *Conn) ReadBatch([]Message) (int, error)  { return 0, ErrUnsupported }
func (c *Conn) WriteBatch([]Message) (int, error) { return 0, ErrUnsupported }
func (c *Conn) LocalAddr() netip.AddrPort         { return netip.AddrPort{} }
func (c *Conn) Offloads() (gso, gro bool)         { return false, false }
func (c *Conn) Close() error                      { return nil }
func (c *Conn) Drops() uint64                     { return 0 }

// TrySend sends nothing: see Listen.
func (c *Conn) TrySend(*Message) bool { return false }

// Adopt fails: see Listen.
func Adopt(Config, *os.File) (*Conn, error) { return nil, ErrUnsupported }

func (c *Conn) DupFile() (*os.File, error)       { return nil, ErrUnsupported }
func (c *Conn) Control(func(fd int) error) error { return ErrUnsupported }

// Disarm fails: see Listen.
func (c *Conn) Disarm() error { return ErrUnsupported }
