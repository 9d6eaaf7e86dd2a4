package tun

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadDoesNotWait: a queue's Read does not wait (0 packets when none
// is ready), a packet looped through the kernel makes the lent
// descriptor readable and is read, and Close makes the closing eventfd
// readable, after which Hold fails as closed.
func TestReadDoesNotWait(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	q := dev.Queues()[0]
	in, sizes := makeBufs(4)
	if n, err := q.Read(in, sizes, headroom); n != 0 || err != nil {
		t.Fatalf("Read with nothing ready = %d, %v; want 0, nil", n, err)
	}
	var tunFD, closing int
	if err := q.Hold(func(fd, c int) { tunFD, closing = fd, c }); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Write(loopBatch(1, headroom), headroom); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	fds := []unix.PollFd{{Fd: int32(tunFD), Events: unix.POLLIN}, {Fd: int32(closing), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 || err != nil || fds[0].Revents&unix.POLLIN == 0 {
		t.Fatalf("poll = %d, %v, revents %#x %#x; want the TUN readable", n, err, fds[0].Revents, fds[1].Revents)
	}
	if n, err := q.Read(in, sizes, headroom); n != 1 || err != nil {
		t.Fatalf("Read after poll = %d, %v; want the looped packet", n, err)
	}
	err := q.Hold(func(fd, c int) {
		dev.Close()
		fds := []unix.PollFd{{Fd: int32(c), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Errorf("closing eventfd after Close: poll = %d, %v; want readable", n, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(func(int, int) {}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Hold after Close = %v, want os.ErrClosed", err)
	}
}

// StopReads wakes a poll on its closing eventfd and
// makes Read fail with os.ErrDeadlineExceeded; the queue still writes. A
// successor holding the same queue (Adopt) has its own eventfd, which
// neither StopReads nor Close here makes readable, and reads on.
func TestStopReads(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0"})
	q := dev.Queues()[0]
	files, err := dev.DupFiles()
	if err != nil {
		t.Fatal(err)
	}
	next, err := Adopt(Config{}, files)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	err = q.Hold(func(_, closing int) {
		if err := dev.StopReads(); err != nil {
			t.Fatal(err)
		}
		fds := []unix.PollFd{{Fd: int32(closing), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Errorf("closing eventfd after StopReads: poll = %d, %v; want readable", n, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	in, sizes := makeBufs(4)
	if _, err := q.Read(in, sizes, headroom); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after StopReads = %v, want os.ErrDeadlineExceeded", err)
	}
	if n, err := q.Write(loopBatch(1, headroom), headroom); n != 1 || err != nil {
		t.Fatalf("Write after StopReads = %d, %v", n, err)
	}
	dev.Close()
	err = next.Queues()[0].Hold(func(fd, closing int) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(closing), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil || fds[0].Revents&unix.POLLIN == 0 || fds[1].Revents != 0 {
			t.Fatalf("successor's poll = %d, %v, revents %#x %#x; want its queue readable, its eventfd not", n, err, fds[0].Revents, fds[1].Revents)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := next.Queues()[0].Read(in, sizes, headroom); n != 1 || err != nil {
		t.Fatalf("successor's Read = %d, %v; want the looped packet", n, err)
	}
}
