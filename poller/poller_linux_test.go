package poller

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventfd returns a non-blocking eventfd closed at the end of the test.
func eventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func signal(t *testing.T, fd int) {
	t.Helper()
	if _, err := unix.Write(fd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
}

func drain(fd int) {
	var b [8]byte
	unix.Read(fd, b[:])
}

// TestWaitWakes: a wait returns when the second of two descriptors
// becomes readable from another goroutine, and says which, both while
// the Poller waits raw (hot) and through the scheduler (cold).
func TestWaitWakes(t *testing.T) {
	for _, cold := range []bool{false, true} {
		t.Run(map[bool]string{false: "hot", true: "cold"}[cold], func(t *testing.T) {
			a, b := eventfd(t), eventfd(t)
			p := New(a, b)
			if cold {
				p.quiet = p.coldAfter
			}
			done := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				done <- p.Wait()
			}()
			signal(t, b)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait did not return within 5 s of the descriptor becoming readable")
			}
			if p.Ready(0) || !p.Ready(1) {
				t.Fatalf("Ready(0) = %v, Ready(1) = %v; want only the signalled descriptor", p.Ready(0), p.Ready(1))
			}
		})
	}
}

// TestWaitAllocatesNothing: a Wait with a descriptor ready allocates
// nothing.
func TestWaitAllocatesNothing(t *testing.T) {
	a := eventfd(t)
	p := New(a)
	signal(t, a)
	if n := testing.AllocsPerRun(100, func() {
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%.1f allocations per Wait, want 0", n)
	}
	drain(a)
}
