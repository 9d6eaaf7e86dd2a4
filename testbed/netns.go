package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

var namespaceSeq atomic.Int32

// Prefix starts the name of every namespace a testbed creates, so that a
// sweep can find the leftovers of a run that was killed.
const Prefix = "fu-"

// OwnPrefix starts the name of every namespace this process creates:
// Prefix and the process id. Test processes running at once (go test runs
// packages in parallel; several checkouts may test on one machine) never
// share or sweep each other's namespaces.
func OwnPrefix() string { return Prefix + strconv.Itoa(os.Getpid()) + "-" }

// NS is one network namespace created by a testbed.
type NS struct {
	Name string
	// CPUs, when set, is the CPU list (taskset -c syntax) every command
	// started in the namespace is bound to: a host of a pinned bed.
	CPUs string
	// Private are directories of the shared filesystem that this host has
	// of its own, as a separate machine would: every command started in
	// the namespace sees Source bound over Path (in the mount namespace
	// that `ip netns exec` makes for each command).
	Private []PrivateDir
}

// PrivateDir is a host's own copy of a directory: Source over Path.
type PrivateDir struct{ Path, Source string }

// privateMounts binds each "source path" pair of arguments before "--",
// then runs the rest.
const privateMounts = `while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"`

// argv is the command line that runs args inside the namespace.
func (ns NS) argv(args []string) []string {
	argv := []string{"ip", "netns", "exec", ns.Name}
	if ns.CPUs != "" {
		argv = append(argv, "taskset", "-c", ns.CPUs)
	}
	if len(ns.Private) > 0 {
		argv = append(argv, "sh", "-c", privateMounts, "sh")
		for _, d := range ns.Private {
			argv = append(argv, d.Source, d.Path)
		}
		argv = append(argv, "--")
	}
	return append(argv, args...)
}

// Run executes a command inside the namespace and returns its combined
// output; a non-zero exit is an error that carries the output.
func (ns NS) Run(args ...string) (string, error) {
	return run(ns.argv(args)...)
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
	argv := ns.argv(args)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
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

// Do runs fn on an OS thread switched into the namespace, so that devices
// and sockets fn creates belong to it (their fds stay usable from any
// thread). fn must not start goroutines that expect to inherit the
// namespace: Go schedules them on other threads. If the thread cannot be
// switched back it stays locked and dies with its goroutine, so the
// namespace never leaks to other goroutines.
func (ns NS) Do(fn func() error) error {
	target, err := netns.GetFromName(ns.Name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns.Name, err)
			return
		}
		defer func() {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		errc <- fn()
	}()
	return <-errc
}

// In is Do for a test: it fails tb when fn cannot run in the namespace.
func (ns NS) In(tb testing.TB, fn func()) {
	tb.Helper()
	if err := ns.Do(func() error { fn(); return nil }); err != nil {
		tb.Fatal(err)
	}
}

// IP runs `ip -n <ns> args...` for a test, failing it on error.
func (ns NS) IP(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := run(append([]string{"ip", "-n", ns.Name}, args...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Exec runs a command inside the namespace for a test, failing it on error.
func (ns NS) Exec(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := ns.Run(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// addNS creates a namespace with lo up.
func addNS(name string) (NS, error) {
	ns, err := createNS(name)
	if err != nil {
		return ns, err
	}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		return ns, err
	}
	return ns, nil
}

// createNS creates a namespace as the kernel makes it: lo down, no links.
func createNS(name string) (NS, error) {
	if _, err := run("ip", "netns", "add", name); err != nil {
		return NS{}, err
	}
	return NS{Name: name}, nil
}

// Path is the namespace's file, the netns path a CNI runtime passes.
func (ns NS) Path() string {
	return "/run/netns/" + ns.Name
}

// deleteNS kills every process left in the namespace but this one, then
// removes it. `ip netns pids` reads each process's leader thread: when a
// test's setns landed on its main thread, this process is listed too, and
// killing it was the "signal: killed" seen in the race run of encap.
func deleteNS(name string) {
	out, _ := run("ip", "netns", "pids", name)
	self := strconv.Itoa(os.Getpid())
	for _, pid := range strings.Fields(out) {
		if pid == self {
			continue
		}
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
	_, err := os.Stat(NS{Name: name}.Path())
	return err == nil
}

// Sweep removes the namespaces whose names start with prefix, and the
// processes in them.
func Sweep(prefix string) {
	for _, name := range namespaces() {
		if strings.HasPrefix(name, prefix) {
			deleteNS(name)
		}
	}
}

// SweepStale removes what test processes killed before their cleanup left
// behind: the namespaces named OwnPrefix() of a process that no longer
// exists, with the processes in them, and the beds' temporary directories
// named the same way. It returns what it removed.
func SweepStale() (removed []string) {
	for _, name := range namespaces() {
		if stale(name) {
			deleteNS(name)
			removed = append(removed, "namespace "+name)
		}
	}
	tmp := os.TempDir()
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if path := filepath.Join(tmp, e.Name()); e.IsDir() && stale(e.Name()) && os.RemoveAll(path) == nil {
			removed = append(removed, "directory "+path)
		}
	}
	return removed
}

// stale reports whether name is OwnPrefix() of a process that no longer
// exists; a name of another scheme is someone else's, never stale.
func stale(name string) bool {
	rest, ok := strings.CutPrefix(name, Prefix)
	pid, _, dash := strings.Cut(rest, "-")
	if n, err := strconv.Atoi(pid); !ok || !dash || err != nil || n <= 0 {
		return false
	}
	_, err := os.Stat("/proc/" + pid)
	return errors.Is(err, fs.ErrNotExist)
}

// namespaces lists the names of the named network namespaces.
func namespaces() []string {
	out, _ := run("ip", "netns", "list")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
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

// Namespace creates a network namespace for one test, named OwnPrefix()
// + name + a sequence number (so that tests of several packages running
// at once never share one), with lo up and
// IPv6 off (so the kernel sends no router solicitations into a TUN under
// test), and removes it (and any process in it) when the test ends. It
// calls RequireRoot first.
func Namespace(tb testing.TB, name string) NS {
	tb.Helper()
	RequireRoot(tb)
	full := fmt.Sprintf("%s%s-%d", OwnPrefix(), name, namespaceSeq.Add(1))
	ns, err := addNS(full)
	tb.Cleanup(func() { deleteNS(full) })
	if err != nil {
		tb.Fatalf("namespace %s: %v", full, err)
	}
	ns.Exec(tb, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return ns
}
