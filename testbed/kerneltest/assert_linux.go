package kerneltest

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// Logger sends a backend's log lines (debug and up) to t.Log, so they
// show with a failing test only, and counts its messages: LogOf gives the
// count to a test that waits for one, such as kernel.Reconciled.
func Logger(t testing.TB) *slog.Logger {
	logger, _ := logtest.New(tWriter{t})
	return logger
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// Log is the message count of a backend's Logger.
type Log struct{ *logtest.Log }

// LogOf returns the Log of a logger made by Logger or derived from one.
func LogOf(t testing.TB, l *slog.Logger) Log {
	t.Helper()
	log := logtest.Of(l)
	if log == nil {
		t.Fatalf("logger %T was not made by kerneltest.Logger", l.Handler())
	}
	return Log{log}
}

// WaitCount waits until msg has been logged n times in all, and fails the
// test if that takes longer than EventDeadline.
func (l Log) WaitCount(t testing.TB, msg string, n int) {
	t.Helper()
	if err := l.Wait(msg, n, EventDeadline); err != nil {
		t.Fatal(err)
	}
}

// Passes is how many reconcile passes (kernel.Reconciled) have finished.
// To see a change through the reconcile loop, take Passes after making
// it and wait for two more: the pass running at that moment may have
// read the state half-way through the change; the next one saw it whole.
func (l Log) Passes() int { return l.Count(kernel.Reconciled) }

// WaitPasses waits until n reconcile passes have finished in all.
func (l Log) WaitPasses(t testing.TB, n int) {
	t.Helper()
	l.WaitCount(t, kernel.Reconciled, n)
}

// EventDeadline bounds every wait for an event (a log message, a route):
// only a failing test runs into it, so it is generous for a loaded CI
// machine.
const EventDeadline = 30 * time.Second

// SubscribeRoutes delivers the namespace's route changes until cleanup.
func (n *Namespace) SubscribeRoutes(t testing.TB) <-chan netlink.RouteUpdate {
	t.Helper()
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeAt(n.NS, ch, done); err != nil {
		t.Fatalf("subscribe to routes in %s: %v", n.Name, err)
	}
	t.Cleanup(func() { close(done) })
	return ch
}

// NoRouteDeleted watches ch, fails on any RTM_DELROUTE (the proof that
// forwarding was never interrupted), and returns once until holds and
// every route change made before that has been read from ch. until is
// an event, such as n reconcile passes done; it must hold within
// EventDeadline.
func (n *Namespace) NoRouteDeleted(t testing.TB, ch <-chan netlink.RouteUpdate, until func() bool) {
	t.Helper()
	deadline := time.After(EventDeadline)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case u := <-ch:
			checkNotDeleted(t, u)
		case <-tick.C:
			done = until()
		case <-deadline:
			t.Fatalf("watching for route deletions: the end event did not come within %v", EventDeadline)
		}
	}
	// A marker route, added now: once its update arrives, every change
	// before it has arrived too.
	marker := []string{"203.0.113.254/32", "dev", "lo", "table", strconv.Itoa(markerTable)}
	n.IP(t, append([]string{"route", "add"}, marker...)...)
	defer n.IP(t, append([]string{"route", "del"}, marker...)...)
	for {
		select {
		case u := <-ch:
			if u.Table == markerTable && u.Type == unix.RTM_NEWROUTE {
				return
			}
			checkNotDeleted(t, u)
		case <-deadline:
			t.Fatalf("the marker route's update did not arrive within %v", EventDeadline)
		}
	}
}

// markerTable holds NoRouteDeleted's marker route, out of every backend's way.
const markerTable = 99

func checkNotDeleted(t testing.TB, u netlink.RouteUpdate) {
	t.Helper()
	if u.Type == unix.RTM_DELROUTE && u.Table != markerTable {
		t.Fatalf("route deleted: %v", u.Route)
	}
}
