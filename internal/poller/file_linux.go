package poller

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// NewFile returns an os.File for fd, a non-blocking descriptor, that Go's
// netpoller does not watch: os.NewFile registers a non-blocking descriptor
// there, and the netpoller's thread would then wake for every packet. It
// leaves fd's O_NONBLOCK alone too, because that flag belongs to the open
// file, shared with every process holding a duplicate (a hand-over's
// predecessor, whose non-blocking reads must not block for a moment):
// os.NewFile is given a blocking placeholder, which dup3 then replaces with
// fd. NewFile takes fd over; it is closed on error too.
func NewFile(fd int, name string) (*os.File, error) {
	defer unix.Close(fd)
	placeholder, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	f := os.NewFile(uintptr(placeholder), name)
	if err := unix.Dup3(fd, placeholder, unix.O_CLOEXEC); err != nil {
		f.Close()
		return nil, os.NewSyscallError("dup3", err)
	}
	return f, nil
}

// Dup duplicates the descriptor behind raw (close-on-exec), for handing it
// to another process or keeping it past the file raw belongs to. The
// duplicate shares the open file, so its O_NONBLOCK and its queue.
func Dup(raw syscall.RawConn) (int, error) {
	nfd := -1
	var dupErr error
	if err := raw.Control(func(fd uintptr) { nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	return nfd, nil
}
