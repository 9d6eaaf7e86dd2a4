package main

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed/logtest"
)

func TestHandOverPathIsBesideTheSubnetFile(t *testing.T) {
	for _, c := range []struct{ flag, subnetFile, want string }{
		{"", "/run/flannel/subnet.env", "/run/flannel/flannelu.sock"},
		{"", "/tmp/h1/subnet.env", "/tmp/h1/flannelu.sock"},
		{"/run/x.sock", "/run/flannel/subnet.env", "/run/x.sock"},
		{"none", "/run/flannel/subnet.env", ""},
	} {
		if got := handOverPath(&options{handOverSocket: c.flag, subnetFile: c.subnetFile}); got != c.want {
			t.Errorf("--handover-socket %q --subnet-file %s: %q, want %q", c.flag, c.subnetFile, got, c.want)
		}
	}
}

func TestNoPredecessorWithoutAListener(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flannelu.sock")
	p, err := findPredecessor(context.Background(), path, discardLogger())
	if p != nil || err != nil {
		t.Fatalf("no socket: %v, %v; want none", p, err)
	}
	// A crashed process leaves its socket file behind.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if p, err := findPredecessor(context.Background(), path, discardLogger()); p != nil || err != nil {
		t.Fatalf("stale socket: %v, %v; want none", p, err)
	}
}

// A successor that goes away before asking the running process to leave
// changes nothing; the next one takes over: it gets the lease, and the
// running process leaves and frees the socket path.
func TestHandOverServesUntilASuccessorTakesOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flannelu.sock")
	lease := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.7.0/24"), LeaseID: 42,
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1")}}
	left := make(chan struct{})
	logger, log := logtest.New(nil)
	srv := &handOverServer{path: path, log: logger, leave: func() { close(left) },
		state: handOverMsg{Op: opState, PID: os.Getpid(), Backend: "host-gw", Lease: &lease}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.run(ctx) }()
	if err := log.Wait(handOverListening, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	first, err := findPredecessor(ctx, path, discardLogger())
	if err != nil || first == nil {
		t.Fatalf("first successor: %v, %v", first, err)
	}
	if got := *first.state.Lease; got.Subnet != lease.Subnet || got.LeaseID != 42 || got.Attrs.PublicIP != lease.Attrs.PublicIP {
		t.Errorf("lease handed over: %+v, want %+v", got, lease)
	}
	first.conn.Close() // gone before "leave"

	second, err := findPredecessor(ctx, path, discardLogger())
	if err != nil || second == nil {
		t.Fatalf("second successor: %v, %v", second, err)
	}
	if err := second.dismiss(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-left:
	default:
		t.Fatal("the server said bye without leaving")
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file after the hand-over: %v, want it removed", err)
	}
}

// offering is a backend that hands off one TUN queue, one IPv4 and one
// IPv6 socket (stand-ins: the protocol only counts and passes them).
type offering struct{ backend.Backend }

func (offering) HandOff() (*udp.Inherited, error) {
	var fs []*os.File
	for range 3 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return &udp.Inherited{Queues: fs[:1], Sockets: fs[1:2], Sockets6: fs[2:]}, nil
}

// The IPv6 sockets go only to a successor whose hello says it takes them;
// one of an older version, which would take them for IPv4 sockets and
// fail, gets the queue and the IPv4 socket alone.
func TestHandOverSendsIPv6SocketsToWhoTakesThem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flannelu.sock")
	lease := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.7.0/24"), IPv6Subnet: netip.MustParsePrefix("2001:db8:100:7::/64")}
	logger, log := logtest.New(nil)
	srv := &handOverServer{path: path, log: logger, leave: func() {}, be: offering{},
		state: handOverMsg{Op: opState, PID: os.Getpid(), Backend: "udp", Lease: &lease}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.run(ctx) //nolint:errcheck // ends with ctx
	if err := log.Wait(handOverListening, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, takes := range []bool{true, false} {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		if err := sendMsg(c, handOverMsg{Op: opHello, PID: os.Getpid(), TakesIPv6: takes}, nil); err != nil {
			t.Fatal(err)
		}
		msg, files, err := receiveMsg(c)
		closeFiles(files)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		want, want6 := 2, 0
		if takes {
			want, want6 = 3, 1
		}
		if len(files) != want || msg.Queues != 1 || msg.Sockets6 != want6 {
			t.Errorf("takes IPv6 %t: %d descriptors, %d queues, %d IPv6 sockets; want %d, 1, %d",
				takes, len(files), msg.Queues, msg.Sockets6, want, want6)
		}
	}
}
