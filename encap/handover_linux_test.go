package encap

import (
	"os"
	"testing"
)

// Datagrams waiting in a socket when it changes hands are read by the new
// owner, which keeps its address and options.
func TestAdoptKeepsQueuedDatagrams(t *testing.T) {
	_, a, b := pair(t)
	sent := outgoing(hostB, []int{10, 20, 30})
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	f, err := b.DupFile()
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // the old owner leaves
	adopted, err := Adopt(Config{}, f)
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Close()
	if adopted.LocalAddr() != hostB {
		t.Errorf("adopted socket on %v, want %v", adopted.LocalAddr(), hostB)
	}
	checkReceived(t, readAll(t, adopted, len(sent), 2048), sent, hostA)
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
