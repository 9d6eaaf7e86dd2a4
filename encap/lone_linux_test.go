package encap

import (
	"bytes"
	"testing"
)

// TrySend sends one whole packet over UDP (IPv4 and IPv6) and IPIP, from
// a SelfPolled socket as the udp backend's, and leaves to WriteBatch what
// it cannot send with one plain call: a message with a Head, an empty
// one, a destination of the other family.
func TestTrySend(t *testing.T) {
	ns := pairNS(t)
	a := listenIn(t, ns, Config{Addr: hostA, SelfPolled: true})
	b := listenIn(t, ns, Config{Addr: hostB})
	sent := outgoing(hostB, []int{300})
	if !a.TrySend(&sent[0]) {
		t.Fatal("TrySend of one whole packet to an IPv4 peer did not send it")
	}
	checkReceived(t, readAll(t, b, 1, 2048), sent, hostA)
	refused := []Message{
		{Head: []byte{1}, Buf: payload(0, 10), N: 10, Addr: hostB},
		{Buf: payload(0, 10), N: 0, Addr: hostB},
		{Buf: payload(0, 10), N: 10, Addr: hostB6},
		{Buf: payload(0, 10), N: 10},
	}
	for i := range refused {
		if a.TrySend(&refused[i]) {
			t.Errorf("TrySend of %+v sent it, want it left to WriteBatch", refused[i])
		}
	}

	a6, b6 := pair6(t)
	sent6 := outgoing(hostB6, []int{200})
	if !a6.TrySend(&sent6[0]) {
		t.Fatal("TrySend of one whole packet to an IPv6 peer did not send it")
	}
	checkReceived(t, readAll(t, b6, 1, 2048), sent6, hostA6)
	if m := outgoing(hostB, []int{10}); a6.TrySend(&m[0]) {
		t.Error("an IPv6 socket's TrySend sent to an IPv4 address")
	}
}

func TestTrySendIPIP(t *testing.T) {
	_, a, b := ipipPair(t)
	pkt := innerIPv4(0, 500, 1, 63, true)
	m := ipipMessages(hostB.Addr(), pkt)
	if !a.TrySend(&m[0]) {
		t.Fatal("TrySend of an inner IPv4 packet over IPIP did not send it")
	}
	got := readAll(t, b, 1, 2048)
	if d, _ := got[0].Datagram(0); got[0].Off != OuterHeaderLen || !bytes.Equal(d, pkt) {
		t.Fatalf("received Off %d, %d bytes; want the %d-byte inner packet after the outer header", got[0].Off, len(d), len(pkt))
	}
	if bad := ipipMessages(hostB.Addr(), payload(0, 60)); a.TrySend(&bad[0]) {
		t.Error("TrySend over IPIP sent a packet that is not IPv4")
	}
}

func TestTrySendDoesNotAllocate(t *testing.T) {
	ns := pairNS(t)
	a := listenIn(t, ns, Config{Addr: hostA, SelfPolled: true})
	b := listenIn(t, ns, Config{Addr: hostB, SelfPolled: true})
	m := outgoing(hostB, []int{100})
	in := incoming(8, 2048)
	allocs := testing.AllocsPerRun(100, func() {
		a.TrySend(&m[0])
		b.ReadBatch(in) //nolint:errcheck // what is received does not matter here
	})
	if allocs != 0 {
		t.Fatalf("TrySend allocated %.1f times per packet, want 0", allocs)
	}
}
