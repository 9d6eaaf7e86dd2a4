package tun

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/poller"
)

// DupFiles returns a duplicate of every queue's descriptor, in queue order,
// for another process to take over (Adopt): a queue stays attached, and the
// packets waiting in it stay queued, as long as one duplicate is open.
// The caller closes them once they are handed on.
func (d *Device) DupFiles() ([]*os.File, error) {
	files := make([]*os.File, 0, len(d.queues))
	for i, q := range d.queues {
		f, err := dupFile(q.raw, fmt.Sprintf("tun %s queue %d", d.name, i))
		if err != nil {
			closeAll(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// Adopt builds a Device from queue descriptors another process opened and
// handed over (DupFiles there). The interface's name and mode (VnetHdr) are
// the device's own, read back with TUNGETIFF; cfg.Name, cfg.Queues and
// cfg.VnetHdr are ignored. Offloads are negotiated again, which changes
// nothing on a device that already has them. The Device has a closing
// eventfd of its own (Hold). Adopt takes ownership of files:
// they are closed on error and by Device.Close.
func Adopt(cfg Config, files []*os.File) (_ *Device, err error) {
	if len(files) == 0 {
		return nil, errors.New("tun: no queue to adopt")
	}
	d := &Device{truncated: truncatedCounter(cfg.Metrics)}
	if err := d.openClosing(); err != nil {
		closeAll(files)
		return nil, err
	}
	defer func() {
		if err != nil {
			d.Close()
			closeAll(files[len(d.queues):])
		}
	}()
	var vnet bool
	for i, f := range files {
		name, flags, err := interfaceOf(f)
		if err != nil {
			return nil, fmt.Errorf("tun: adopt queue %d: %w", i, err)
		}
		if i > 0 && (name != d.name || vnet != (flags&unix.IFF_VNET_HDR != 0)) {
			return nil, fmt.Errorf("tun: adopt queue %d: it belongs to %s, not %s", i, name, d.name)
		}
		d.name, vnet = name, flags&unix.IFF_VNET_HDR != 0
		// A duplicate of our own: f.Fd() would make the descriptor
		// blocking, for the process still reading it too (newQueue
		// leaves O_NONBLOCK alone).
		fd, err := dupFD(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("tun: adopt queue %d: %w", i, err)
		}
		q, err := newQueue(d, fd, vnet)
		if err != nil {
			return nil, fmt.Errorf("tun: adopt queue %d: %w", i, err)
		}
		d.queues = append(d.queues, q)
	}
	if vnet {
		if d.offloads, err = negotiateOffloads(d.queues[0].file); err != nil {
			return nil, fmt.Errorf("tun: %s: %w", d.name, err)
		}
	}
	return d, nil
}

// VnetHdr reports whether the device's frames carry a virtio_net_hdr.
func (d *Device) VnetHdr() bool { return len(d.queues) > 0 && d.queues[0].vnetHdr }

// interfaceOf asks the kernel which interface a queue belongs to.
func interfaceOf(f *os.File) (name string, flags uint16, err error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", 0, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return "", 0, err
	}
	var ioErr error
	if err := raw.Control(func(fd uintptr) { ioErr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) }); err != nil {
		return "", 0, err
	}
	if ioErr != nil {
		return "", 0, os.NewSyscallError("ioctl TUNGETIFF (not a TUN queue?)", ioErr)
	}
	return ifr.Name(), ifr.Uint16(), nil
}

// control runs fn on the first queue's descriptor.
func (d *Device) control(fn func(fd int) error) error {
	if len(d.queues) == 0 {
		return errors.New("tun: device has no queue")
	}
	var fnErr error
	if err := d.queues[0].raw.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return d.closedOr("control", err)
	}
	return fnErr
}

// dupFile duplicates the descriptor behind raw (close-on-exec).
func dupFile(raw syscall.RawConn, name string) (*os.File, error) {
	fd, err := poller.Dup(raw)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// dupFD duplicates f's descriptor, non-blocking (newQueue's poller needs
// it; O_NONBLOCK belongs to the open file, which the duplicate shares).
func dupFD(f *os.File) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, err := poller.Dup(raw)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return fd, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// StopReads makes every queue's future Read return an error matching
// os.ErrDeadlineExceeded, leaving the queues open for writes: a forwarder
// stops reading, finishes what it holds, and only then closes them. It
// also makes the closing eventfd readable (Hold), so that a thread waiting
// on the queues wakes up; the eventfd is this process's, so another
// process sharing the queues (DupFiles, Adopt) keeps reading them.
func (d *Device) StopReads() error {
	d.stopped.Store(true)
	return d.wakeClosing()
}
