package udp

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// innerPacket is a valid IPv4/UDP or IPv6/UDP packet (by the family of
// src) of size bytes from src to dst, TTL or hop limit 64, as a pod would
// send it.
func innerPacket(t testing.TB, src, dst string, size int) []byte {
	t.Helper()
	var ip interface {
		gopacket.NetworkLayer
		gopacket.SerializableLayer
	}
	header := 20
	if s := net.ParseIP(src); s.To4() != nil {
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s.To4(), DstIP: net.ParseIP(dst).To4()}
	} else {
		ip, header = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: s, DstIP: net.ParseIP(dst)}, 40
	}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 7777}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(make([]byte, size-header-8))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// queuedAnswer returns the one ICMP error the inside half queued, or nil
// after checking that it queued none when want is false.
func queuedAnswer(t *testing.T, w *worker, want bool) []byte {
	t.Helper()
	switch {
	case !want && w.in.nicmp != 0:
		t.Fatalf("%d ICMP answers queued, want none", w.in.nicmp)
	case want && w.in.nicmp != 1:
		t.Fatalf("%d ICMP answers queued, want 1", w.in.nicmp)
	case !want:
		return nil
	}
	return w.in.icmp[0][headroom:]
}
