package encap

import (
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSelfPolled: a SelfPolled socket's ReadBatch does not wait (0 with
// nothing ready), a datagram makes the lent descriptor readable and is
// read with its sender, and Close wakes a poll on the descriptor, after
// which ReadBatch and Hold fail as closed.
func TestSelfPolled(t *testing.T) {
	ns := pairNS(t)
	a := listenIn(t, ns, Config{Addr: hostA})
	b := listenIn(t, ns, Config{Addr: hostB, SelfPolled: true})
	in := incoming(4, 2048)
	if n, err := b.ReadBatch(in); n != 0 || err != nil {
		t.Fatalf("ReadBatch with nothing ready = %d, %v; want 0, nil", n, err)
	}
	if n, err := a.WriteBatch(outgoing(hostB, []int{100})); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	err := b.Hold(func(fd int) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Fatalf("poll = %d, %v; want the socket readable", n, err)
		}
		if n, err := b.ReadBatch(in); n != 1 || err != nil || in[0].N != 100 || in[0].Addr != hostA {
			t.Fatalf("ReadBatch = %d, %v, %d bytes from %v; want 100 bytes from %v", n, err, in[0].N, in[0].Addr, hostA)
		}
		b.Close()
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Fatalf("poll after Close = %d, %v; want the socket readable (woken)", n, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadBatch(in); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close = %v, want net.ErrClosed", err)
	}
	if err := b.Hold(func(int) {}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Hold after Close = %v, want net.ErrClosed", err)
	}
}

// A SelfPolled socket that changed hands (DupFile, Adopt) is not shut down
// when its old owner closes its copy: the new owner still receives.
func TestSelfPolledAdoptOutlivesTheOldOwner(t *testing.T) {
	ns := pairNS(t)
	a := listenIn(t, ns, Config{Addr: hostA})
	b := listenIn(t, ns, Config{Addr: hostB, SelfPolled: true})
	f, err := b.DupFile()
	if err != nil {
		t.Fatal(err)
	}
	next, err := Adopt(Config{SelfPolled: true}, f)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.LocalAddr() != hostB {
		t.Errorf("adopted socket on %v, want %v", next.LocalAddr(), hostB)
	}
	b.Close()
	if n, err := a.WriteBatch(outgoing(hostB, []int{100})); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	in := incoming(4, 2048)
	err = next.Hold(func(fd int) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Fatalf("poll = %d, %v; want the socket readable", n, err)
		}
		if n, err := next.ReadBatch(in); n != 1 || err != nil || in[0].N != 100 || in[0].Addr != hostA {
			t.Fatalf("ReadBatch = %d, %v, %d bytes from %v; want 100 bytes from %v", n, err, in[0].N, in[0].Addr, hostA)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
