package poller

import (
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dgramPair returns the two ends of a non-blocking datagram socket pair
// as files off Go's netpoller, closed at the end of the test.
func dgramPair(t *testing.T) (a, b *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a, err = NewFile(fds[0], "a"); err != nil {
		t.Fatal(err)
	}
	if b, err = NewFile(fds[1], "b"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// oneDatagram is a Step that sends or receives one datagram of buf.
type oneDatagram struct {
	buf   [64]byte
	send  bool
	calls int
}

func (d *oneDatagram) step(fd uintptr) (bool, unix.Errno) {
	d.calls++
	nr := uintptr(unix.SYS_READ)
	if d.send {
		nr = unix.SYS_WRITE
	}
	_, _, e := unix.Syscall(nr, fd, uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)))
	return true, e
}

// An interrupted call is made again; the batch ends when the step says
// it is complete.
func TestOpRetriesInterruptedCalls(t *testing.T) {
	a, _ := dgramPair(t)
	calls := 0
	var op Op
	op.Bind(func(uintptr) (bool, unix.Errno) {
		calls++
		if calls < 3 {
			return false, unix.EINTR
		}
		return true, 0
	})
	raw, _ := a.SyscallConn()
	if ready, errno, err := op.Try(raw); !ready || errno != 0 || err != nil || calls != 3 {
		t.Fatalf("Try = %v, %v, %v after %d calls; want done after 3", ready, errno, err, calls)
	}
}

// Try reports a descriptor that is not ready (EAGAIN) without waiting,
// and an error of the system call as its errno; after Close it fails.
func TestOpTry(t *testing.T) {
	a, b := dgramPair(t)
	rx := &oneDatagram{}
	var op Op
	op.Bind(rx.step)
	raw, _ := b.SyscallConn()
	if ready, errno, err := op.Try(raw); ready || errno != 0 || err != nil {
		t.Fatalf("Try with nothing queued = %v, %v, %v; want not ready", ready, errno, err)
	}
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if ready, errno, err := op.Try(raw); !ready || errno != 0 || err != nil || rx.buf[0] != 'x' {
		t.Fatalf("Try with a datagram queued = %v, %v, %v, got %q; want it read", ready, errno, err, rx.buf[0])
	}
	op.Bind(func(uintptr) (bool, unix.Errno) { return true, unix.EBADF })
	if _, errno, _ := op.Try(raw); errno != unix.EBADF {
		t.Fatalf("Try of a failing call: errno %v, want EBADF", errno)
	}
	b.Close()
	if _, _, err := op.Try(raw); err == nil {
		t.Fatal("Try on a closed file returned no error")
	}
}

// Write waits for room where Try finds none, until the datagram is taken.
func TestOpWriteWaitsForRoom(t *testing.T) {
	a, b := dgramPair(t)
	tx := &oneDatagram{send: true}
	var op Op
	op.Bind(tx.step)
	raw, _ := a.SyscallConn()
	queued := 0
	for {
		ready, errno, err := op.Try(raw)
		if err != nil || errno != 0 {
			t.Fatalf("Try = %v, %v", errno, err)
		}
		if !ready {
			break // the buffer is full
		}
		queued++
	}
	received := make(chan int)
	go func() { received <- drainFor(b, queued+1, 5*time.Second) }()
	if errno, err := op.Write(raw); errno != 0 || err != nil {
		t.Fatalf("Write on a full buffer = %v, %v; want the datagram sent", errno, err)
	}
	if n := <-received; n != queued+1 {
		t.Fatalf("received %d datagrams, want the %d queued and the one Write waited to send", n, queued+1)
	}
}

// drainFor reads datagrams from f, waiting in poll, until want came or
// the time is up, and returns how many came. f is off the netpoller, so
// its Fd keeps the descriptor non-blocking.
func drainFor(f *os.File, want int, limit time.Duration) int {
	fd := int(f.Fd())
	deadline := time.Now().Add(limit)
	var buf [64]byte
	n := 0
	for n < want && time.Now().Before(deadline) {
		if _, err := unix.Read(fd, buf[:]); err == nil {
			n++
			continue
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1) //nolint:errcheck // the next read says
	}
	return n
}

// Polled waits in Go's netpoller until the descriptor is ready.
func TestOpPolled(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b") // on the netpoller
	defer a.Close()
	defer b.Close()
	rx := &oneDatagram{}
	var op Op
	op.Bind(rx.step)
	raw, _ := b.SyscallConn()
	done := make(chan error, 1)
	go func() {
		errno, err := op.Polled(raw, false)
		if err == nil && errno != 0 {
			err = errno
		}
		done <- err
	}()
	if _, err := a.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || rx.buf[0] != 'y' {
			t.Fatalf("Polled = %v, got %q; want the datagram", err, rx.buf[0])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Polled did not return after a datagram arrived")
	}
}

func TestOpAllocatesNothing(t *testing.T) {
	a, b := dgramPair(t)
	tx, rx := &oneDatagram{send: true}, &oneDatagram{}
	var send, recv Op
	send.Bind(tx.step)
	recv.Bind(rx.step)
	ra, _ := a.SyscallConn()
	rb, _ := b.SyscallConn()
	allocs := testing.AllocsPerRun(100, func() {
		send.Write(ra) //nolint:errcheck // counted below
		recv.Try(rb)   //nolint:errcheck
	})
	if allocs != 0 {
		t.Fatalf("Write+Try allocated %.1f times per run, want 0", allocs)
	}
}
