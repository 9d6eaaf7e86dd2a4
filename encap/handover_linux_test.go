package encap

import (
	"os"
	"testing"
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
