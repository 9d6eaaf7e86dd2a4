package encap

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flannelu/flannelu/testbed"
	"golang.org/x/sys/unix"
)

var netnsSeq atomic.Int32

// testNetns is a network namespace a test creates and always removes.
type testNetns struct{ name string }

// newNetns creates a fresh namespace with lo up and IPv6 off (so the kernel
// sends no router solicitations into a TUN under test), removed on cleanup.
func newNetns(tb testing.TB) *testNetns {
	tb.Helper()
	testbed.RequireRoot(tb)
	ns := &testNetns{name: fmt.Sprintf("flu-enc-%d-%d", os.Getpid(), netnsSeq.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ns.ip(tb, "link", "set", "lo", "up")
	ns.exec(tb, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return ns
}

// ip runs `ip -n <ns> args...` and fails the test on error.
func (ns *testNetns) ip(tb testing.TB, args ...string) string {
	tb.Helper()
	return ns.run(tb, "ip", append([]string{"-n", ns.name}, args...)...)
}

// exec runs a command inside the namespace.
func (ns *testNetns) exec(tb testing.TB, args ...string) string {
	tb.Helper()
	return ns.run(tb, "ip", append([]string{"netns", "exec", ns.name}, args...)...)
}

func (ns *testNetns) run(tb testing.TB, cmd string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(cmd, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", cmd, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// do runs f on an OS thread switched into the namespace, so that devices
// and sockets f creates belong to it. The fds stay usable from any thread.
// If the thread cannot be switched back it is left locked and dies with
// its goroutine, never leaking the namespace to other goroutines.
func (ns *testNetns) do(tb testing.TB, f func()) {
	tb.Helper()
	target, err := unix.Open("/run/netns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open netns %s: %v", ns.name, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		defer func() {
			if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		defer func() { errc <- nil }()
		f()
	}()
	if err := <-errc; err != nil {
		tb.Fatalf("enter netns %s: %v", ns.name, err)
	}
}
