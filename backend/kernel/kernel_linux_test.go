package kernel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestPrefixRoundTrip(t *testing.T) {
	for _, s := range []string{"198.18.2.0/24", "198.18.0.0/16", "192.0.2.7/32", "0.0.0.0/0"} {
		p := netip.MustParsePrefix(s)
		got, ok := Prefix(IPNet(p))
		if !ok || got != p {
			t.Errorf("Prefix(IPNet(%v)) = %v, %v", p, got, ok)
		}
	}
	// netlink may hand back 16-byte IPv4 forms.
	n := &net.IPNet{IP: net.ParseIP("198.18.3.0"), Mask: net.CIDRMask(120, 128)}
	if got, ok := Prefix(n); !ok || got != netip.MustParsePrefix("198.18.3.0/24") {
		t.Errorf("4-in-6 form: %v, %v", got, ok)
	}
	if _, ok := Prefix(nil); ok {
		t.Error("Prefix(nil) ok")
	}
	if _, ok := Prefix(&net.IPNet{IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(8, 32)}); ok {
		t.Error("3-byte IP accepted")
	}
}

func TestDumpRetriesInterruptedOnly(t *testing.T) {
	calls := 0
	got, err := Dump("x", func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted // partial: must not be returned
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Fatalf("got %v, %v after %d calls", got, err, calls)
	}

	calls = 0
	_, err = Dump("x", func() ([]int, error) { calls++; return nil, unix.EPERM })
	if !errors.Is(err, unix.EPERM) || calls != 1 {
		t.Fatalf("permanent error: %v after %d calls, want EPERM after 1", err, calls)
	}

	calls = 0
	got, err = Dump("x", func() ([]int, error) { calls++; return []int{1}, unix.EINTR })
	if err == nil || got != nil || calls != DumpAttempts {
		t.Fatalf("always interrupted: %v, %v after %d calls", got, err, calls)
	}
}

func TestNotExist(t *testing.T) {
	for _, e := range []error{unix.ESRCH, unix.ENOENT, unix.EADDRNOTAVAIL} {
		if IgnoreNotExist(e) != nil {
			t.Errorf("%v not treated as already gone", e)
		}
	}
	if IgnoreNotExist(unix.EPERM) == nil {
		t.Error("EPERM swallowed")
	}
}

func TestReconcileWaitsOneIntervalAndStops(t *testing.T) {
	const interval = 50 * time.Millisecond
	calls := make(chan time.Duration, 100)
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Reconcile(ctx, interval, slog.New(slog.NewTextHandler(io.Discard, nil)),
			func(context.Context) error {
				calls <- time.Since(start)
				return errors.New("transient") // must not stop the loop
			})
	}()
	// Three syncs, each failing: the loop goes on after errors.
	var first time.Duration
	for i := 0; i < 3; i++ {
		select {
		case d := <-calls:
			if i == 0 {
				first = d
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d syncs, then none for 30 s: the loop stopped", i)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Reconcile returned %v on cancel, want nil", err)
	}
	elapsed := time.Since(start)
	if first < interval {
		t.Errorf("first sync after %v, want one interval (%v) later", first, interval)
	}
	// A ticker never fires more often than its interval, however late
	// the loop runs: at most elapsed/interval syncs in all.
	if n := 3 + len(calls); time.Duration(n)*interval > elapsed {
		t.Errorf("%d syncs in %v at %v intervals", n, elapsed, interval)
	}
}

// Owned: only prefixes of the network's family strictly inside it.
func TestOwned(t *testing.T) {
	network := netip.MustParsePrefix("198.18.0.0/16")
	if !Owned(network, netip.MustParsePrefix("198.18.9.0/24")) || Owned(network, network) ||
		Owned(network, netip.MustParsePrefix("203.0.113.0/24")) || Owned(network, netip.MustParsePrefix("198.0.0.0/8")) {
		t.Error("Owned rule wrong")
	}
	network6 := netip.MustParsePrefix("2001:db8:100::/48")
	if !Owned(network6, netip.MustParsePrefix("2001:db8:100:9::/64")) || Owned(network6, network6) ||
		Owned(network6, netip.MustParsePrefix("198.18.0.0/24")) || Owned(network, netip.MustParsePrefix("2001:db8:100:9::/64")) {
		t.Error("Owned rule wrong for IPv6")
	}
}
