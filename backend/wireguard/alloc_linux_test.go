package wireguard

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/subnet"
)

// pipe is two backends in this namespace, each the other's peer over
// 127.0.0.1: a datagram a local socket sends to 198.18.2.5 goes through
// wga (read from its TUN, encrypted, sent), arrives at wgb (received,
// decrypted, written into its TUN), where the kernel counts it received
// (and drops it: its source is a local address). Both halves of the
// in-process pipeline run, in this process.
type pipe struct {
	a, b *Backend
	sock int
}

func newPipe(t *testing.T) *pipe {
	t.Helper()
	p := &pipe{}
	dir := t.TempDir()
	p.a = newTestBackend(t, "wga", `{"Type":"wireguard","ListenPort":51830}`, filepath.Join(dir, "a"), false)
	p.b = newTestBackend(t, "wgb", `{"Type":"wireguard","ListenPort":51831}`, filepath.Join(dir, "b"), false)
	attrs := map[*Backend]subnet.LeaseAttrs{}
	for i, b := range []*Backend{p.a, p.b} {
		a, err := b.Init(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		a.PublicIP = netip.MustParseAddr("127.0.0.1")
		attrs[b] = a
		if err := b.Start(context.Background(), ownLease(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	lease := func(i int, b *Backend) []subnet.Event {
		l := ownLease(i)
		l.IPv6Subnet, l.Attrs = netip.Prefix{}, attrs[b]
		return []subnet.Event{{Type: subnet.EventAdded, Lease: l}}
	}
	p.b.HandleEvents(context.Background(), lease(1, p.a))
	p.a.HandleEvents(context.Background(), lease(2, p.b)) // wga handshakes: wgb knows it by now
	// Both started last took the network route: send host 2's subnet into wga.
	if out, err := exec.Command("ip", "route", "replace", "198.18.2.0/24", "dev", "wga").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var err error
	if p.sock, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p.sock) })
	if err := unix.Connect(p.sock, &unix.SockaddrInet4{Addr: [4]byte{198, 18, 2, 5}, Port: 9}); err != nil {
		t.Fatal(err)
	}
	// One datagram at a time until one arrives: the session is up.
	deadline := time.Now().Add(30 * time.Second)
	for start := arrived(t); arrived(t) == start; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no datagram arrived at wgb in 30 s: no session between wga and wgb")
		}
		unix.Write(p.sock, []byte("x"))
	}
	return p
}

// arrived is how many packets wgb has written into its TUN: its receive
// count in /proc/net/dev, read with system calls into a buffer of its own
// so that the polling itself allocates nothing.
func arrived(t *testing.T) uint64 {
	if devFD < 0 {
		fd, err := unix.Open("/proc/self/net/dev", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		devFD = fd
	}
	n, err := unix.Pread(devFD, devBuf[:], 0) // the file is made anew at each read from 0
	if err != nil {
		t.Fatal(err)
	}
	line := devBuf[:n]
	i := bytes.Index(line, []byte("wgb:"))
	if i < 0 {
		t.Fatal("wgb not in /proc/net/dev")
	}
	fields, inNumber := 0, false
	var v uint64
	for _, c := range line[i+4:] {
		switch {
		case c >= '0' && c <= '9':
			v, inNumber = v*10+uint64(c-'0'), true
		case inNumber:
			if fields == 1 { // rx bytes, then rx packets
				return v
			}
			fields, v, inNumber = fields+1, 0, false
		}
	}
	t.Fatal("no receive count for wgb in /proc/net/dev")
	return 0
}

var (
	devBuf [16 << 10]byte
	devFD  = -1
)

// send sends n datagrams in bursts of 32, each burst once half the one
// before arrived, and returns how many arrived (a burst may lose some on
// a loaded machine).
func (p *pipe) send(t *testing.T, n int, size int) int {
	t.Helper()
	payload := make([]byte, size)
	start := arrived(t)
	for i := 0; i < n; i += 32 {
		burst := arrived(t)
		for j := 0; j < 32; j++ {
			unix.Write(p.sock, payload)
		}
		p.wait(t, burst+16)
	}
	deadline := time.Now().Add(time.Second) // stragglers, then count
	for arrived(t) < start+uint64(n) && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	return int(arrived(t) - start)
}

func (p *pipe) wait(t *testing.T, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for arrived(t) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d packets arrived at wgb, want %d", arrived(t), want)
		}
		time.Sleep(time.Millisecond) // a short poll of a counter, not a wait for time to pass
	}
}

// TestPipelineAllocatesNothing holds the in-process WireGuard pipeline,
// both halves, to zero allocations per packet in steady state: every
// allocation of the process (runtime.MemStats) while 4000 datagrams go
// from wga's TUN to wgb's, with the garbage collector off during the
// count so that pooled buffers stay pooled. What may remain is
// wireguard-go's buffer pools growing when more packets than before are
// in flight at once (a few dozen per run, seen 14-78), not work done per
// packet: wireguard-go's own StdNetBind allocated 3 per packet here (a
// net.UDPAddr and an endpoint per received datagram, and pool churn),
// which the bound, under one per 20 packets, fails.
func TestPipelineAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector sync.Pool drops items at random, so wireguard-go's pools allocate; the run without -race (make test's first pass) checks this")
	}
	p := newPipe(t)
	for _, size := range []int{64, 1200} {
		t.Run(fmt.Sprint(size, " B"), func(t *testing.T) {
			p.send(t, 4000, size) // warm up: pools, batches
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			n := p.send(t, 4000, size)
			runtime.ReadMemStats(&after)
			perPacket := float64(after.Mallocs-before.Mallocs) / float64(n)
			t.Logf("%d datagrams, %d allocations: %.3f per packet", n, after.Mallocs-before.Mallocs, perPacket)
			if perPacket >= 0.05 {
				t.Errorf("%.3f allocations per packet, want 0", perPacket)
			}
		})
	}
}
