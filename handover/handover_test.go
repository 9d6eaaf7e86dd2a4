package handover

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed/logtest"
)

const waitLimit = 10 * time.Second

var (
	lease = subnet.Lease{Subnet: netip.MustParsePrefix("198.18.7.0/24"), LeaseID: 42,
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1")}}
	ident = Identity{Store: EtcdStore("http://192.0.2.1:2379", "/coreos.com/network"), Network: "198.18.0.0/16/24 {\"Type\":\"udp\"}",
		Backend: "udp", Iface: "eth0", PublicIP: "192.0.2.1", Device: "udp workers 0 offload true"}
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// abstractAddr is an abstract name unique to the test.
func abstractAddr(t *testing.T) Addr {
	return Addr{Name: "flannelu-test/" + t.Name() + "/" + time.Now().Format(time.RFC3339Nano), Abstract: true}
}

// serve runs a server on a with the package's test lease and identity until
// the test ends; left is closed when it calls Leave, and wait returns Run's
// result.
func serve(t *testing.T, a Addr, timeout time.Duration, lend func() (*udp.Inherited, error)) (log *logtest.Log, left chan struct{}, wait func() error) {
	t.Helper()
	logger, log := logtest.New(nil)
	left = make(chan struct{})
	srv := &Server{Addr: a, Identity: ident, Lease: lease, Lend: lend, Timeout: timeout, Log: logger, Leave: func() { close(left) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = srv.Run(ctx); close(done) }()
	wait = func() error { <-done; return err }
	t.Cleanup(func() { cancel(); wait() }) //nolint:errcheck // the test checks it where it matters
	if err := log.Wait(Listening, 1, waitLimit); err != nil {
		t.Fatal(err)
	}
	return log, left, wait
}

func TestAddrFor(t *testing.T) {
	long := "/run/" + strings.Repeat("x", 120) + "/subnet.env"
	for _, c := range []struct {
		flag, subnetFile string
		want             Addr
		on               bool
	}{
		{"", "/run/flannel/subnet.env", Addr{Name: "flannelu/run/flannel/subnet.env", Abstract: true}, true},
		{"@mine", "/run/flannel/subnet.env", Addr{Name: "mine", Abstract: true}, true},
		{"/run/x.sock", "/run/flannel/subnet.env", Addr{Name: "/run/x.sock"}, true},
		{"none", "/run/flannel/subnet.env", Addr{}, false},
	} {
		if got, on := AddrFor(c.flag, c.subnetFile); got != c.want || on != c.on {
			t.Errorf("--handover-socket %q --subnet-file %s: %+v %t, want %+v %t", c.flag, c.subnetFile, got, on, c.want, c.on)
		}
	}
	a, _ := AddrFor("", long)
	b, _ := AddrFor("", long+"2")
	if !a.Abstract || len(a.Name) > maxName || a == b {
		t.Errorf("long subnet file paths: %q and %q, want two distinct abstract names of at most %d bytes", a.Name, b.Name, maxName)
	}
}

// Nobody listening, a crashed process's socket file, a symlink or another
// file at the path: no predecessor, and nothing is followed.
func TestNoPredecessorWithoutAListener(t *testing.T) {
	dir := t.TempDir()
	for name, a := range map[string]Addr{"abstract": abstractAddr(t), "path": {Name: filepath.Join(dir, "none.sock")}} {
		if p, err := Find(context.Background(), a, ident, 0, discard()); p != nil || err != nil {
			t.Errorf("%s, nobody listens: %v, %v; want none", name, p, err)
		}
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if p, err := Find(context.Background(), Addr{Name: stale}, ident, 0, discard()); p != nil || err != nil {
		t.Fatalf("stale socket file: %v, %v; want none", p, err)
	}
	// A live listener behind a symlink is not connected to.
	target := Addr{Name: filepath.Join(dir, "target.sock")}
	log, _, _ := serve(t, target, time.Second, nil)
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(target.Name, link); err != nil {
		t.Fatal(err)
	}
	if p, err := Find(context.Background(), Addr{Name: link}, ident, 0, discard()); p != nil || err != nil {
		t.Fatalf("symlink to a live socket: %v, %v; want none", p, err)
	}
	if n := log.Count(Refused) + log.Count("a successor connected; forwarding on until it asks to leave"); n != 0 {
		t.Errorf("the listener behind the symlink was contacted (%d lines)", n)
	}
}

// A successor that goes away before asking the running process to leave
// changes nothing; the next one takes over: it gets the lease, and the
// running process leaves and removes its socket file.
func TestServesUntilASuccessorTakesOver(t *testing.T) {
	a := Addr{Name: filepath.Join(t.TempDir(), "flannelu.sock")}
	_, left, wait := serve(t, a, 10*time.Second, nil)
	first, err := Find(context.Background(), a, ident, 0, discard())
	if err != nil || first == nil {
		t.Fatalf("first successor: %v, %v", first, err)
	}
	if got := first.Lease; got.Subnet != lease.Subnet || got.LeaseID != 42 || got.Attrs.PublicIP != lease.Attrs.PublicIP {
		t.Errorf("lease handed over: %+v, want %+v", got, lease)
	}
	first.Abandon("a test")
	second, err := Find(context.Background(), a, ident, 0, discard())
	if err != nil || second == nil {
		t.Fatalf("second successor: %v, %v", second, err)
	}
	if err := second.Dismiss(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-left:
	default:
		t.Fatal("the server said bye without leaving")
	}
	if err := wait(); err != nil {
		t.Fatalf("server: %v", err)
	}
	if _, err := os.Lstat(a.Name); !os.IsNotExist(err) {
		t.Errorf("socket file after the hand-over: %v, want it removed", err)
	}
}

// A flannelu of another network (here: another etcd prefix, or another
// interface) is refused with a reason, not lent anything, and waits until
// the running one stops.
func TestRefusesAnotherNetwork(t *testing.T) {
	a := abstractAddr(t)
	lent := 0
	log, _, _ := serve(t, a, 10*time.Second, func() (*udp.Inherited, error) { lent++; return &udp.Inherited{}, nil })
	other, otherIface := ident, ident
	other.Store = EtcdStore("http://192.0.2.1:2379", "/other/network")
	otherIface.Iface, otherIface.PublicIP = "eth1", "198.51.100.1"
	for i, id := range []Identity{other, otherIface} {
		p, err := Find(context.Background(), a, id, 0, discard())
		var r *Refusal
		if p != nil || !errors.As(err, &r) || r.Foreign {
			t.Fatalf("identity %+v: %v, %v; want a refusal to wait on", id, p, err)
		}
		if !strings.Contains(r.Reason, "another network") {
			t.Errorf("refusal reason %q", r.Reason)
		}
		if err := log.Wait(Refused, i+1, waitLimit); err != nil {
			t.Fatal(err)
		}
		// Held open while the server runs.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if err := r.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait while the refusing server runs: %v, want the context's deadline", err)
		}
		cancel()
	}
	if lent != 0 {
		t.Errorf("descriptors lent %d times to flannelus of another network", lent)
	}
}

// Wait returns once the refusing server has stopped.
func TestRefusalEndsWithTheServer(t *testing.T) {
	a := abstractAddr(t)
	_, stop := serveUntilStopped(t, a)
	other := ident
	other.Backend = "vxlan"
	_, err := Find(context.Background(), a, other, 0, discard())
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("Find: %v, want a refusal", err)
	}
	stop()
	if err := r.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after the server stopped: %v", err)
	}
}

// serveUntilStopped runs a server on a with the package's test lease and
// identity until stop, which returns once Run has.
func serveUntilStopped(t *testing.T, a Addr) (log *logtest.Log, stop func()) {
	t.Helper()
	logger, log := logtest.New(nil)
	srv := &Server{Addr: a, Identity: ident, Lease: lease, Log: logger, Leave: func() {}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }() //nolint:errcheck // a stopped server's result is not the test's
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	if err := log.Wait(Listening, 1, waitLimit); err != nil {
		t.Fatal(err)
	}
	return log, stop
}

// Garbage, a client that never says hello and one that takes the
// descriptors and never says leave change nothing: the first two are
// refused without a descriptor, the third is cut off after Timeout, and a
// real successor is served meanwhile and after.
func TestBadClientsChangeNothing(t *testing.T) {
	saved := helloTimeout
	t.Cleanup(func() { helloTimeout = saved }) // after the server's cleanup
	helloTimeout = 500 * time.Millisecond
	a := abstractAddr(t)
	var lent []*udp.Inherited
	log, left, _ := serve(t, a, time.Second, func() (*udp.Inherited, error) {
		inh := devNulls(t)
		lent = append(lent, inh)
		return inh, nil
	})
	garbage, err := net.DialUnix("unixpacket", nil, a.unix())
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	if _, err := garbage.Write([]byte("\x00\xffnot json")); err != nil {
		t.Fatal(err)
	}
	if err := log.Wait(Refused, 1, waitLimit); err != nil {
		t.Fatal(err)
	}
	stalled, err := net.DialUnix("unixpacket", nil, a.unix())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	half, err := Find(context.Background(), a, ident, 0, discard())
	if err != nil || half == nil {
		t.Fatalf("half-finished client: %v, %v", half, err)
	}
	held := half.Inherit()
	defer held.Close()
	if len(held.Queues) != 1 || len(held.Sockets) != 1 || len(held.Sockets6) != 1 {
		t.Errorf("lent %d queues, %d IPv4 and %d IPv6 sockets; want one each", len(held.Queues), len(held.Sockets), len(held.Sockets6))
	}
	if err := log.Wait(CutOff, 1, waitLimit); err != nil {
		t.Fatal(err)
	}
	if err := log.Wait(Refused, 2, waitLimit); err != nil { // the stalled one, after helloTimeout
		t.Fatal(err)
	}
	real, err := Find(context.Background(), a, ident, 0, discard())
	if err != nil || real == nil {
		t.Fatalf("real successor: %v, %v", real, err)
	}
	if err := real.Dismiss(); err != nil {
		t.Fatal(err)
	}
	<-left
	if len(lent) != 2 {
		t.Errorf("descriptors lent %d times, want 2 (the half-finished client and the successor)", len(lent))
	}
}

// devNulls stands in for a TUN queue, an IPv4 and an IPv6 socket: the
// protocol only counts and passes descriptors.
func devNulls(t *testing.T) *udp.Inherited {
	var fs []*os.File
	for range 3 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	return &udp.Inherited{Queues: fs[:1], Sockets: fs[1:2], Sockets6: fs[2:]}
}

// A socket file is created fresh by its owner: a symlink at the path is
// removed (its target untouched), a regular file or a live socket is left
// alone and the listener not started, and Close removes only the file it
// bound.
func TestListenPathIsCreatedFresh(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := Addr{Name: filepath.Join(dir, "flannelu.sock")}
	if err := os.Symlink(target, a.Name); err != nil {
		t.Fatal(err)
	}
	ln, err := a.listen(ctx, discard())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(a.Name); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file: %v %v, want a socket of mode 0600", fi.Mode(), err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
		t.Errorf("the symlink's target: %q %v", b, err)
	}
	if _, err := a.listen(ctx, discard()); err == nil {
		t.Error("a second listener on a live socket file started")
	}
	// Someone replaces the file: Close leaves the replacement.
	if err := os.Remove(a.Name); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.Name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if fi, err := os.Lstat(a.Name); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("after Close: %v %v, want the regular file that replaced the socket", fi, err)
	}
	if _, err := a.listen(ctx, discard()); err == nil {
		t.Error("listening over a regular file")
	}
}
