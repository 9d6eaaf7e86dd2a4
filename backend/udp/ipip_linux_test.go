package udp

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/encap"
)

// TestIPIPForwardingAllocatesNothing is TestForwardingAllocatesNothing
// with the ipip encapsulation: the same pipeline over a raw socket of
// protocol 4, with and without offloads.
func TestIPIPForwardingAllocatesNothing(t *testing.T) {
	for _, offloads := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "offload"}[offloads]
		t.Run(name, func(t *testing.T) {
			r := newRigOf(t, offloads, encap.IPIP)
			if r.b.MTU() != 1500-20 {
				t.Fatalf("overlay MTU %d, want %d (external - 20)", r.b.MTU(), 1500-20)
			}
			forwardWithoutAllocs(t, r, innerPacket(t, "198.18.2.5", "198.18.1.7", 600))
		})
	}
}

// TestIPIPLoopBothWaysKeepsTTL runs the worker loop with the ipip
// encapsulation: a local pod's packet reaches the peer as protocol 4, the
// outer header's TTL the inner one, the inner packet untouched (the
// kernel's tunnel is no hop: its TTL is not lowered, where the udp
// backend lowers it as flanneld's proxy does); and the peer's IPIP packet
// reaches the local pod.
func TestIPIPLoopBothWaysKeepsTTL(t *testing.T) {
	r := newRigOf(t, false, encap.IPIP)
	r.ns.IP(t, "addr", "add", "198.18.1.7/32", "dev", "lo")
	local := r.localPod(t, netip.MustParseAddrPort("198.18.1.7:7777"))
	done := r.runLoop(0)
	payload := []byte("through the tunnel")
	unix.Write(r.pod, payload)
	got := recvWithin(t, r.peer, "the peer's protocol-4 socket")
	if len(got) < 2*20+8 || got[9] != 4 {
		t.Fatalf("the peer read % x: not IPIP", got)
	}
	outer, inner := got[:20], got[20:]
	if inner[8] != 64 || outer[8] != inner[8] {
		t.Errorf("inner TTL %d, outer TTL %d: want the pod's 64 in both", inner[8], outer[8])
	}
	if !bytes.Equal(inner[28:], payload) {
		t.Errorf("inner payload %q, want %q", inner[28:], payload)
	}
	// The peer's pod answers: 198.18.2.5 -> 198.18.1.7, protocol 4 from
	// the peer's address.
	unix.Write(r.peer, innerPacket(t, "198.18.2.5", "198.18.1.7", 100))
	if got := recvWithin(t, local, "the local pod"); len(got) != 100-28 {
		t.Errorf("the local pod read %d bytes, want %d", len(got), 100-28)
	}
	r.b.close()
	stopped(t, done)
}
