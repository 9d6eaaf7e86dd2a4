package encap

import (
	"net/netip"
	"os"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// Datagrams waiting in a socket when it changes hands are read by the new
// owner, which keeps its address and options.
func TestAdoptKeepsQueuedDatagrams(t *testing.T) {
	_, a, b := pair(t)
	adopted, sent := handOverQueued(t, a, b, Config{})
	checkReceived(t, readAll(t, adopted, len(sent), 2048), sent, hostA)
}

// handOverQueued sends three datagrams from a to b, then b's owner hands
// its socket over and leaves: Adopt(cfg) takes it. It returns the new
// owner's Conn, on b's address, and what waits in it.
func handOverQueued(t *testing.T, a, b *Conn, cfg Config) (*Conn, []Message) {
	t.Helper()
	sent := outgoing(b.LocalAddr(), []int{10, 20, 30})
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	f, err := b.DupFile()
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // the old owner leaves
	adopted, err := Adopt(cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adopted.Close() })
	if adopted.LocalAddr() != b.LocalAddr() {
		t.Errorf("adopted socket on %v, want %v", adopted.LocalAddr(), b.LocalAddr())
	}
	return adopted, sent
}

func TestAdoptRefusesWhatIsNotAUDPSocket(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Adopt(Config{}, f); err == nil {
		t.Fatal("Adopt of /dev/null succeeded")
	}
}

// A socket disarmed (its last owner stopped without a successor, while a
// process may still hold a copy) receives nothing more from its peers,
// and a socket bound beside it later (a restart) receives every flow:
// eight of them, which SO_REUSEPORT would otherwise spread over both.
func TestDisarmLeavesThePortToTheNextSocket(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) {
		ns := pairNS(t)
		checkDisarm(t, ns, hostA.Addr(), netip.AddrPortFrom(hostB.Addr(), 8300))
	})
	t.Run("IPv6", func(t *testing.T) {
		_, _, ns := pair6NS(t)
		checkDisarm(t, ns, hostA6.Addr(), netip.AddrPortFrom(hostB6.Addr(), 8300))
	})
}

func checkDisarm(t *testing.T, ns testbed.NS, src netip.Addr, dst netip.AddrPort) {
	old := listenIn(t, ns, Config{Addr: dst, ReusePort: true})
	if err := old.Disarm(); err != nil {
		t.Fatal(err)
	}
	next := listenIn(t, ns, Config{Addr: dst, ReusePort: true})
	const flows = 8
	for i := range flows {
		from := listenIn(t, ns, Config{Addr: netip.AddrPortFrom(src, uint16(9001+i))})
		if n, err := from.WriteBatch(outgoing(dst, []int{10 + i})); n != 1 || err != nil {
			t.Fatalf("flow %d: WriteBatch = %d, %v", i, n, err)
		}
	}
	if got := readAll(t, next, flows, 2048); len(got) != flows {
		t.Errorf("the socket bound after the disarmed one got %d of %d flows", len(got), flows)
	}
}
