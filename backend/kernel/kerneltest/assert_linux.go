package kerneltest

import (
	"log/slog"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Logger sends a backend's log lines (debug and up) to t.Log, so they
// show with a failing test only.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// Eventually polls cond every 20 ms for up to d and fails the test if it
// never holds; explain runs first, to log what was seen.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool, explain ...func()) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, f := range explain {
				f()
			}
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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

// NoRouteDeleted watches ch for d and fails on any RTM_DELROUTE: the
// proof that forwarding was never interrupted.
func NoRouteDeleted(t testing.TB, ch <-chan netlink.RouteUpdate, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case u := <-ch:
			if u.Type == unix.RTM_DELROUTE {
				t.Fatalf("route deleted: %v", u.Route)
			}
		case <-timeout:
			return
		}
	}
}
