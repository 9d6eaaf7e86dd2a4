package tun

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/packet"
)

const (
	tunDevice = "/dev/net/tun"
	maxQueues = 256 // MAX_TAP_QUEUES
)

// offloadSteps are tried in order until the kernel accepts one: USO needs
// Linux 6.2, TSO is old, checksum offload alone is the last resort.
var offloadSteps = []Offload{
	OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadUSO4 | OffloadUSO6,
	OffloadCsum | OffloadTSO4 | OffloadTSO6,
	OffloadCsum,
}

// Device is an open TUN interface. It lives until Close; the kernel removes
// the (non-persistent) interface when its last queue is closed.
type Device struct {
	name      string
	queues    []*Queue
	offloads  Offload
	closed    atomic.Bool
	truncated *metrics.Counter
	// closing is an eventfd that StopReads and Close make readable, so
	// that a thread waiting on the queues wakes up. It is this process's
	// own: a successor sharing the queues (a hand-over) has another.
	closing *os.File
	stopped atomic.Bool // StopReads was called
}

// Open creates (or attaches to) the TUN interface cfg describes, with
// IFF_TUN|IFF_NO_PI, and opens its queues non-blocking, off Go's netpoller.
// The interface is left down and unaddressed: configuring it is the
// caller's job (netlink or ip).
func Open(cfg Config) (*Device, error) {
	name := cfg.Name
	if name == "" {
		name = DefaultName
	}
	queues := cfg.Queues
	if queues <= 0 {
		queues = 1
	}
	if queues > maxQueues {
		return nil, fmt.Errorf("tun: %d queues requested, the kernel allows at most %d", queues, maxQueues)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	if cfg.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	d := &Device{name: name, truncated: truncatedCounter(cfg.Metrics)}
	if err := d.openClosing(); err != nil {
		return nil, err
	}
	for i := 0; i < queues; i++ {
		fd, actual, err := openQueue(d.name, flags)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tun: open %s queue %d: %w", name, i, err)
		}
		d.name = actual // the kernel fills in a "%d" name on the first queue
		if cfg.VnetHdr {
			if err := setVnetHdr(fd); err != nil {
				unix.Close(fd)
				d.Close()
				return nil, fmt.Errorf("tun: %s queue %d: %w", d.name, i, err)
			}
		}
		q, err := newQueue(d, fd, cfg.VnetHdr)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tun: %s queue %d: %w", d.name, i, err)
		}
		d.queues = append(d.queues, q)
	}
	if cfg.VnetHdr {
		off, err := negotiateOffloads(d.queues[0].file)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tun: %s: %w", d.name, err)
		}
		d.offloads = off
	} else if err := clearOffloads(d.queues[0].file); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: %s: %w", d.name, err)
	}
	return d, nil
}

func truncatedCounter(reg *metrics.Registry) *metrics.Counter {
	return reg.Counter("flannelu_tun_truncated_packets_total",
		"Packets read from the TUN device that did not fit the read buffer and were dropped (not detected with --udp-offload, where the forwarder checks each frame).")
}

// openQueue opens one /dev/net/tun file and binds it to the interface.
func openQueue(name string, flags uint16) (fd int, actual string, err error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return -1, "", fmt.Errorf("interface name %q: %w", name, err)
	}
	ifr.SetUint16(flags)
	fd, err = unix.Open(tunDevice, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: tunDevice, Err: err}
	}
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("ioctl TUNSETIFF", err)
	}
	return fd, ifr.Name(), nil
}

func setVnetHdr(fd int) error {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, packet.VirtioNetHdrLen); err != nil {
		return os.NewSyscallError("ioctl TUNSETVNETHDRSZ", err)
	}
	return nil
}

// negotiateOffloads asks for the richest offload set the kernel accepts.
// The features belong to the interface, so one queue's fd is enough.
func negotiateOffloads(f *os.File) (Offload, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var lastErr error
	for _, want := range offloadSteps {
		var ioErr error
		if err := raw.Control(func(fd uintptr) {
			ioErr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, int(want))
		}); err != nil {
			return 0, err
		}
		if ioErr == nil {
			return want, nil
		}
		lastErr = ioErr
	}
	return 0, os.NewSyscallError("ioctl TUNSETOFFLOAD", lastErr)
}

// clearOffloads turns off the offloads a persistent device may keep from a
// run in VnetHdr mode: without the header a super-packet cannot be told.
func clearOffloads(f *os.File) error {
	return ioctlInt(f, "TUNSETOFFLOAD", unix.TUNSETOFFLOAD, 0)
}

// PersistFile makes a TUN device opened elsewhere (wireguard-go's, by the
// wireguard backend) persistent: it outlives the process, with its route.
func PersistFile(f *os.File) error {
	return ioctlInt(f, "TUNSETPERSIST", unix.TUNSETPERSIST, 1)
}

// ioctlInt runs an integer ioctl on f through its raw connection: File.Fd
// would make the descriptor blocking under the reads of its owner.
func ioctlInt(f *os.File, name string, req uint, v int) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := raw.Control(func(fd uintptr) { ioErr = unix.IoctlSetInt(int(fd), req, v) }); err != nil {
		return err
	}
	return os.NewSyscallError("ioctl "+name, ioErr)
}

// Name is the interface name the kernel gave the device.
func (d *Device) Name() string { return d.name }

// Queues returns the device's queues, one per Config.Queues. The slice is
// shared; do not modify it.
func (d *Device) Queues() []*Queue { return d.queues }

// Offloads reports the offloads the kernel accepted in VnetHdr mode; it is
// zero on a device opened without VnetHdr.
func (d *Device) Offloads() Offload { return d.offloads }

// Close closes every queue. A Read or Write blocked on any queue returns
// an error matching errors.Is(err, os.ErrClosed). Close is idempotent.
func (d *Device) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	var errs []error
	if d.closing != nil {
		errs = append(errs, d.wakeClosing(), d.closing.Close())
	}
	for _, q := range d.queues {
		if err := q.file.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closedOr turns the poller's "use of closed file" into os.ErrClosed.
func (d *Device) closedOr(op string, err error) error {
	if d.closed.Load() {
		return fmt.Errorf("tun: %s %s: %w", op, d.name, os.ErrClosed)
	}
	return fmt.Errorf("tun: %s %s: %w", op, d.name, err)
}

// openClosing creates the eventfd Close signals. Like the queues it is not
// on Go's netpoller (created blocking, then made non-blocking), so the
// os.File only keeps it open while it is lent out.
func (d *Device) openClosing() error {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	d.closing = os.NewFile(uintptr(fd), "tun-closing")
	return unix.SetNonblock(fd, true)
}

// wakeClosing makes the closing eventfd readable for good.
func (d *Device) wakeClosing() error {
	raw, err := d.closing.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	one := [8]byte{1}
	if err := raw.Control(func(fd uintptr) { _, werr = unix.Write(int(fd), one[:]) }); err != nil {
		return err
	}
	return werr
}
