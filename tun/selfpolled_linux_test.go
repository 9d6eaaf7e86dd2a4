package tun

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSelfPolled: a SelfPolled queue's Read does not wait (0 packets when
// none is ready), a packet looped through the kernel makes the lent
// descriptor readable and is read, and Close makes the closing eventfd
// readable, after which Hold fails as closed.
func TestSelfPolled(t *testing.T) {
	_, dev := openConfigured(t, Config{Name: "flu0", SelfPolled: true})
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
