package kernel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/subnet"
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

// CheckPeer asks only for the half of the network's family; validity is
// the subnet.Validator's (see its tests).
func TestCheckPeerAndOwned(t *testing.T) {
	network := netip.MustParsePrefix("198.18.0.0/16")
	lease := func(sn, pub string) subnet.Lease {
		l := subnet.Lease{Attrs: subnet.LeaseAttrs{}}
		if sn != "" {
			l.Subnet = netip.MustParsePrefix(sn)
		}
		if pub != "" {
			l.Attrs.PublicIP = netip.MustParseAddr(pub)
		}
		return l
	}
	if err := CheckPeer(network, lease("198.18.4.0/24", "192.0.2.4")); err != nil {
		t.Errorf("valid lease: %v", err)
	}
	for _, l := range []subnet.Lease{
		lease("", "192.0.2.4"), lease("2001:db8:100:4::/64", "192.0.2.4"), lease("198.18.4.0/24", ""),
		lease("198.18.4.0/24", "2001:db8::1"),
	} {
		if CheckPeer(network, l) == nil {
			t.Errorf("CheckPeer accepted %+v", l)
		}
	}
	if !Owned(network, netip.MustParsePrefix("198.18.9.0/24")) || Owned(network, network) ||
		Owned(network, netip.MustParsePrefix("203.0.113.0/24")) || Owned(network, netip.MustParsePrefix("198.0.0.0/8")) {
		t.Error("Owned rule wrong")
	}
}

func TestCheckPeerIPv6(t *testing.T) {
	network := netip.MustParsePrefix("2001:db8:100::/48")
	lease := func(sn, pub string) subnet.Lease {
		l := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.4")}}
		if sn != "" {
			l.IPv6Subnet = netip.MustParsePrefix(sn)
		}
		if pub != "" {
			l.Attrs.PublicIPv6 = netip.MustParseAddr(pub)
		}
		return l
	}
	if err := CheckPeer(network, lease("2001:db8:100:4::/64", "2001:db8:0:1::4")); err != nil {
		t.Errorf("valid IPv6 half: %v", err)
	}
	for _, tc := range []struct{ sn, pub, want string }{
		{"", "2001:db8:0:1::4", "no IPv6 subnet"},
		{"2001:db8:100:4::/64", "", "not an IPv6 address"},
		{"2001:db8:100:4::/64", "192.0.2.4", "not an IPv6 address"},
	} {
		err := CheckPeer(network, lease(tc.sn, tc.pub))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckPeer(%s, %s) = %v, want an error with %q", tc.sn, tc.pub, err, tc.want)
		}
	}
	// The IPv4 network reads only the IPv4 half, and the other way round.
	if err := CheckPeer(netip.MustParsePrefix("198.18.0.0/16"), lease("", "")); err != nil {
		t.Errorf("IPv4 half of a lease without IPv6: %v", err)
	}
	if !Owned(network, netip.MustParsePrefix("2001:db8:100:9::/64")) || Owned(network, network) ||
		Owned(network, netip.MustParsePrefix("198.18.0.0/24")) || Owned(netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("2001:db8:100:9::/64")) {
		t.Error("Owned rule wrong for IPv6")
	}
}

func TestFamilyOfMappedAddress(t *testing.T) {
	if FamilyOf(netip.MustParseAddr("::ffff:192.0.2.1")) != IPv4 || FamilyOf(netip.MustParseAddr("2001:db8::1")) != IPv6 {
		t.Error("FamilyOf: a 4-in-6 address is IPv4, a real IPv6 address IPv6")
	}
	if IPv4.Contains(netip.Addr{}) || IPv6.Contains(netip.Addr{}) {
		t.Error("the zero address is of no family")
	}
}

// FuzzCheckPeer: whatever a store hands over, CheckPeer never panics, and
// a lease it accepts has a subnet and a public address of the network's
// family.
func FuzzCheckPeer(f *testing.F) {
	f.Add("198.18.0.0/16", "198.18.4.0/24", "192.0.2.4", "", "")
	f.Add("2001:db8:100::/48", "198.18.4.0/24", "192.0.2.4", "2001:db8:100:4::/64", "2001:db8:0:1::4")
	f.Add("2001:db8:100::/48", "", "", "2001:db8:100::/48", "fe80::1")
	f.Add("2001:db8:100::/48", "", "", "::ffff:198.18.4.0/120", "::ffff:192.0.2.4")
	f.Fuzz(func(t *testing.T, network, sn, pub, sn6, pub6 string) {
		n, err := netip.ParsePrefix(network)
		if err != nil {
			return
		}
		var l subnet.Lease
		l.Subnet, _ = netip.ParsePrefix(sn)
		l.Attrs.PublicIP, _ = netip.ParseAddr(pub)
		l.IPv6Subnet, _ = netip.ParsePrefix(sn6)
		l.Attrs.PublicIPv6, _ = netip.ParseAddr(pub6)
		if CheckPeer(n, l) != nil {
			return
		}
		f := FamilyOf(n.Addr())
		if got, public := f.Subnet(l), f.PublicIP(l); !f.Contains(got.Addr()) || !f.Contains(public) {
			t.Fatalf("CheckPeer(%v) accepted %s half %v via %v", n, f, got, public)
		}
	})
}
