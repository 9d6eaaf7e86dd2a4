package udp

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/poller"
)

// runLoop starts the rig worker's loop (one goroutine, one OS thread) and
// returns where its result arrives; busyPoll is Options.BusyPoll.
func (r *rig) runLoop(busyPoll time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.w.run(busyPoll) }()
	return done
}

// busyPolls are the loop's two ways to wait for the next packet: asleep
// at once, or polling for the longest window first.
var busyPolls = []struct {
	name string
	d    time.Duration
}{{"sleep", 0}, {"busy-poll", poller.MaxBusyPoll}}

// stopped waits for the loop's end: it must end, and cleanly.
func stopped(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the loop ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end within 5 s of the close")
	}
}

// recvWithin reads one datagram on fd, failing after 5 s.
func recvWithin(t *testing.T, fd int, what string) []byte {
	t.Helper()
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := unix.Read(fd, buf)
	for err == unix.EINTR { // a socket with a receive timeout is not restarted after a signal (Go's preemption)
		n, err = unix.Read(fd, buf)
	}
	if err != nil {
		t.Fatalf("%s: nothing arrived: %v", what, err)
	}
	return buf[:n]
}

// TestLoopForwardsBothDirections runs the one worker loop and sends
// through it both ways, alternately, as a ping-pong does: a pod's datagram
// comes out at the peer's socket as flannel's encapsulation, and the
// peer's datagram reaches a local pod's socket; with and without busy
// polling.
func TestLoopForwardsBothDirections(t *testing.T) {
	for _, offloads := range []bool{false, true} {
		for _, bp := range busyPolls {
			t.Run(map[bool]string{false: "plain", true: "offload"}[offloads]+"/"+bp.name, func(t *testing.T) {
				forwardBothWays(t, offloads, bp.d)
			})
		}
	}
}

func forwardBothWays(t *testing.T, offloads bool, busyPoll time.Duration) {
	r := newRig(t, offloads)
	r.ns.IP(t, "addr", "add", "198.18.1.7/32", "dev", "lo")
	local := r.localPod(t, netip.MustParseAddrPort("198.18.1.7:7777"))
	done := r.runLoop(busyPoll)
	for i := 0; i < 20; i++ {
		unix.Write(r.pod, []byte("ping"))
		if got := recvWithin(t, r.peer, "peer socket"); len(got) != 20+8+4 || got[9] != unix.IPPROTO_UDP {
			t.Fatalf("round %d: the peer got % x, want an IPv4/UDP packet with a 4-byte payload", i, got)
		}
		unix.Write(r.peer, innerPacket(t, "198.18.2.5", "198.18.1.7", 100))
		if got := recvWithin(t, local, "local pod"); len(got) != 100-28 {
			t.Fatalf("round %d: the local pod got %d bytes, want %d", i, len(got), 100-28)
		}
	}
	r.b.close()
	stopped(t, done)
}

// localPod binds a UDP socket in the rig's namespace, as a pod listening
// on the rig's own subnet.
func (r *rig) localPod(t *testing.T, at netip.AddrPort) int {
	t.Helper()
	var fd int
	err := r.ns.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: at.Addr().As4(), Port: int(at.Port())})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestLoopEndsWhenClosed closes, under an idle loop, first the TUN device,
// then (another loop) the socket alone: either ends it cleanly, whether
// it is starting, waiting raw or asleep through the scheduler (package
// poller's tests wake each kind of wait).
func TestLoopEndsWhenClosed(t *testing.T) {
	t.Run("tun", func(t *testing.T) {
		r := newRig(t, false)
		done := r.runLoop(0)
		r.b.dev.Close()
		stopped(t, done)
	})
	t.Run("socket", func(t *testing.T) {
		r := newRig(t, false)
		done := r.runLoop(0)
		r.b.conns[0].Close()
		stopped(t, done)
	})
}

// TestLoopIdleUsesNoCPU: after a burst of traffic, an idle loop sleeps:
// the whole test process uses well under 0.2 s of CPU in 10 s (a loop
// that spun, or woke every millisecond, would use far more), busy
// polling or not: its window follows a packet only.
func TestLoopIdleUsesNoCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s per way of waiting")
	}
	for _, bp := range busyPolls {
		t.Run(bp.name, func(t *testing.T) { idleCPU(t, bp.d) })
	}
}

func idleCPU(t *testing.T, busyPoll time.Duration) {
	r := newRig(t, false)
	done := r.runLoop(busyPoll)
	for i := 0; i < 100; i++ {
		unix.Write(r.pod, []byte("burst"))
	}
	recvWithin(t, r.peer, "peer socket")
	// Not a wait for an event: the idle interval is what is measured.
	before := cpuTime(t)
	time.Sleep(10 * time.Second)
	used := cpuTime(t) - before
	t.Logf("CPU time used by the idle process in 10 s: %v", used)
	if used > 200*time.Millisecond {
		t.Errorf("an idle loop used %v of CPU in 10 s, want under 200ms", used)
	}
	r.b.close()
	stopped(t, done)
}

func cpuTime(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
