package udp

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/packet"
	"github.com/flannelu/flannelu/internal/poller"
	"github.com/flannelu/flannelu/tun"
)

// usoRig is an offloading rig whose pod sends with UDP_SEGMENT of 1200
// bytes, so that the TUN hands the worker USO super-packets.
func usoRig(t *testing.T) *rig {
	t.Helper()
	r := newRig(t, true)
	if !r.b.dev.Offloads().Has(tun.OffloadUSO4) {
		t.Skip("the TUN takes no UDP super-packets (USO needs Linux 6.2)")
	}
	if err := unix.SetsockoptInt(r.pod, unix.SOL_UDP, unix.UDP_SEGMENT, 1200); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSuperPacketSegmentsOnTheWire sends one UDP super-packet from a pod
// and reads what the peer receives: one datagram per segment, each a
// whole IPv4 packet of flanneld's wire format with its TTL lowered, valid
// IPv4 and UDP checksums, and the payloads in order.
func TestSuperPacketSegmentsOnTheWire(t *testing.T) {
	r := usoRig(t)
	sent := make([]byte, 3*1200+100)
	for i := range sent {
		sent[i] = byte(i*7 + i>>8)
	}
	r.hold(t, func(p *poller.Poller) {
		var pace pace
		unix.Write(r.pod, sent)
		r.turnUntil(t, p, &pace, drop.Inside, 4)
	})
	checkSplit(t, r)
	var got []byte
	buf := make([]byte, 2048)
	for i := range 4 { // sent and delivered on lo before turnUntil returned
		n, _, err := unix.Recvfrom(r.peer, buf, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		d := buf[:n]
		ip, err := packet.ParseIPv4(d)
		if err != nil || int(ip.TotalLen) != n || ip.TTL != 63 {
			t.Fatalf("datagram %d: %d bytes, %+v, %v; want a whole IPv4 packet with TTL 63", i, n, ip, err)
		}
		udp := d[ip.HeaderLen:]
		if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) || packet.Checksum(udp, packet.PseudoSum(17, d[12:16], d[16:20], len(udp))) != 0 {
			t.Fatalf("datagram %d: bad UDP length or checksum", i)
		}
		got = append(got, udp[8:]...)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("payloads: %d bytes arrived, not the %d sent in order", len(got), len(sent))
	}
}

// TestSuperPacketDroppedOnce holds a super-packet to one verdict: with
// TTL 1 it is dropped and counted once (not once per segment), and no
// segment reaches the peer.
func TestSuperPacketDroppedOnce(t *testing.T) {
	r := usoRig(t)
	if err := unix.SetsockoptInt(r.pod, unix.IPPROTO_IP, unix.IP_TTL, 1); err != nil {
		t.Fatal(err)
	}
	r.hold(t, func(p *poller.Poller) {
		var pace pace
		unix.Write(r.pod, make([]byte, 3*1200+100))
		for range 64 {
			if r.b.drops.Get(drop.Inside, drop.TTLExpired) > 0 {
				break
			}
			if stop, err := r.w.turn(p, &pace); stop || err != nil {
				t.Fatalf("turn: stop %v, %v", stop, err)
			}
		}
	})
	checkSplit(t, r)
	if n := r.b.drops.Get(drop.Inside, drop.TTLExpired); n != 1 {
		t.Fatalf("ttl_expired counted %d times for one super-packet, want 1", n)
	}
	if n, _, _ := unix.Recvfrom(r.peer, make([]byte, 2048), unix.MSG_DONTWAIT); n > 0 {
		t.Fatalf("the peer received a %d-byte datagram of an expired super-packet", n)
	}
}

// checkSplit fails unless the worker cut a super-packet (it wrote a header
// slot): a TUN that delivered the pod's datagrams one by one would pass
// the tests above without testing the split.
func checkSplit(t *testing.T, r *rig) {
	t.Helper()
	if len(r.w.in.heads[0]) == 0 {
		t.Fatal("no super-packet was split: the TUN delivered plain packets")
	}
}
