package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace a testbed creates, so that a
// sweep can find the leftovers of a run that was killed.
const Prefix = "fu-"

// NS is one network namespace created by a testbed.
type NS struct {
	Name string
}

// Run executes a command inside the namespace and returns its combined
// output; a non-zero exit is an error that carries the output.
func (ns NS) Run(args ...string) (string, error) {
	return run(append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// MustRun is Run that panics with the output, for set-up steps whose
// failure leaves nothing sensible to test. Callers recover through the
// testbed's cleanup.
func (ns NS) MustRun(args ...string) string {
	out, err := ns.Run(args...)
	if err != nil {
		panic(err)
	}
	return out
}

// Command returns an unstarted command that runs inside the namespace.
func (ns NS) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Dial opens a TCP connection from inside the namespace. The socket keeps
// the namespace it was created in, so the test process (in the root
// namespace) can talk to a server that only the namespace reaches, such
// as etcd on a test host's underlay address.
func (ns NS) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// Do runs fn on an OS thread switched into the namespace. fn must not
// start goroutines that expect to inherit the namespace: Go schedules them
// on other threads.
func (ns NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns.Name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer netns.Set(orig) //nolint:errcheck // restoring the thread's own namespace
	return fn()
}

func addNS(name string) (NS, error) {
	if _, err := run("ip", "netns", "add", name); err != nil {
		return NS{}, err
	}
	ns := NS{Name: name}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		return ns, err
	}
	return ns, nil
}

// deleteNS kills every process left in the namespace, then removes it.
func deleteNS(name string) {
	out, _ := run("ip", "netns", "pids", name)
	for _, pid := range strings.Fields(out) {
		run("kill", "-9", pid) //nolint:errcheck // best effort: the process may be gone
	}
	for i := 0; i < 20; i++ {
		if _, err := run("ip", "netns", "del", name); err == nil || !exists(name) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// Sweep removes namespaces left behind by an earlier run that was killed
// before its cleanup ran. It only touches names that start with prefix.
func Sweep(prefix string) {
	out, _ := run("ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			deleteNS(f[0])
		}
	}
}

func run(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Namespace creates a network namespace named Prefix+name for one test,
// with lo up, and removes it (and any process in it) when the test ends.
func Namespace(tb testing.TB, name string) NS {
	tb.Helper()
	full := Prefix + name
	deleteNS(full)
	ns, err := addNS(full)
	tb.Cleanup(func() { deleteNS(full) })
	if err != nil {
		tb.Fatalf("namespace %s: %v", full, err)
	}
	return ns
}
