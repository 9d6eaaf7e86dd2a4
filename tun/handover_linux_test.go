package tun

import (
	"net"
	"net/netip"
	"os"
	"testing"
)

// sendInto sends count one-byte datagrams from the device's address into
// the overlay: the kernel routes them into the TUN, where they wait for a
// reader.
func sendInto(t *testing.T, c *net.UDPConn, count int) {
	t.Helper()
	for i := range count {
		dst := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.2"), uint16(9000+i))
		if _, err := c.WriteToUDPAddrPort([]byte{byte(i)}, dst); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads until want packets came; it fails on a timeout.
func readAll(t *testing.T, q *Queue, want int) {
	t.Helper()
	bufs, sizes := makeBufs(16)
	for got := 0; got < want; {
		got += readWithin(t, q, bufs, sizes, headroom)
	}
}

// Packets queued in the device when its queues change hands are read by
// the new owner: the duplicates keep the queue, and its contents, alive.
func TestAdoptKeepsQueuedPackets(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			ns, dev := openConfigured(t, Config{Name: "flu0", VnetHdr: vnet})
			c := udpIn(t, ns, tunAddr+":4000")
			const queued = 5
			sendInto(t, c, queued)
			files, err := dev.DupFiles()
			if err != nil {
				t.Fatal(err)
			}
			dev.Close() // the old owner leaves
			adopted, err := Adopt(Config{}, files)
			if err != nil {
				t.Fatal(err)
			}
			defer adopted.Close()
			if adopted.Name() != "flu0" || adopted.VnetHdr() != vnet || len(adopted.Queues()) != 1 {
				t.Fatalf("adopted %s vnet=%v with %d queues", adopted.Name(), adopted.VnetHdr(), len(adopted.Queues()))
			}
			if vnet && adopted.Offloads() == 0 {
				t.Error("no offloads negotiated on the adopted device")
			}
			readAll(t, adopted.Queues()[0], queued)
		})
	}
}

func TestAdoptRefusesWhatIsNotATUNQueue(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Adopt(Config{}, []*os.File{f}); err == nil {
		t.Fatal("Adopt of /dev/null succeeded")
	}
	if _, err := Adopt(Config{}, nil); err == nil {
		t.Fatal("Adopt of nothing succeeded")
	}
}
