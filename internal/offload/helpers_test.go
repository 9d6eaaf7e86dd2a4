package offload

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/flannelu/flannelu/internal/packet"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// spec describes a test packet. Addresses come from the documentation and
// benchmarking ranges the project uses (198.18.0.0/15 overlay).
type spec struct {
	v6, udp    bool
	flow       int // selects the source port, so distinct flows
	seq, ack   uint32
	psh, fin   bool
	cwr, syn   bool
	noACK      bool
	id         uint16
	ttl        uint8
	window     uint16
	tsVal      uint32 // if nonzero, a TCP timestamp option
	payload    []byte
	badL4Check bool
}

var (
	src4 = net.IP{198, 18, 1, 2}
	dst4 = net.IP{198, 19, 3, 4}
	src6 = net.ParseIP("2001:db8::1")
	dst6 = net.ParseIP("2001:db8::2")
)

// build serializes s with correct lengths and checksums (computed by
// gopacket, not by this package).
func build(tb testing.TB, s spec) []byte {
	tb.Helper()
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	proto := layers.IPProtocolTCP
	if s.udp {
		proto = layers.IPProtocolUDP
	}
	if s.v6 {
		l := &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: proto, SrcIP: src6, DstIP: dst6, FlowLabel: 7}
		ip, ipl = l, l
	} else {
		l := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: proto, SrcIP: src4, DstIP: dst4,
			Id: s.id, Flags: layers.IPv4DontFragment}
		ip, ipl = l, l
	}
	var l4 gopacket.SerializableLayer
	if s.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(40000 + s.flow), DstPort: 8285}
		_ = u.SetNetworkLayerForChecksum(ip)
		l4 = u
	} else {
		win := s.window
		if win == 0 {
			win = 502
		}
		t := &layers.TCP{SrcPort: layers.TCPPort(40000 + s.flow), DstPort: 5201, Seq: s.seq, Ack: s.ack,
			ACK: !s.noACK, PSH: s.psh, FIN: s.fin, CWR: s.cwr, SYN: s.syn, Window: win}
		if s.tsVal != 0 {
			ts := make([]byte, 8)
			binary.BigEndian.PutUint32(ts, s.tsVal)
			t.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts}}
		}
		_ = t.SetNetworkLayerForChecksum(ip)
		l4 = t
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ipl, l4, gopacket.Payload(s.payload)); err != nil {
		tb.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if s.badL4Check {
		b[len(b)-1] ^= 0x5a // corrupt the payload, keep the checksum
	}
	return b
}

// superPacket builds what a TUN read returns for a TSO/USO send: the packet
// with lengths for the whole payload and, as the kernel leaves it, only the
// pseudo-header sum in the L4 checksum field; plus its virtio header.
func superPacket(tb testing.TB, s spec, gsoSize int) ([]byte, packet.VirtioNetHdr) {
	tb.Helper()
	p := build(tb, s)
	l4Off, csumOff, hdrLen := 20, 16, 40
	if s.v6 {
		l4Off, hdrLen = 40, 60
	}
	if s.udp {
		csumOff, hdrLen = 6, l4Off+8
	} else {
		hdrLen = l4Off + int(p[l4Off+12]>>4)*4
	}
	h := packet.VirtioNetHdr{Flags: packet.FlagNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: uint16(hdrLen), GSOSize: uint16(gsoSize),
		CsumStart: uint16(l4Off), CsumOffset: uint16(csumOff)}
	switch {
	case s.udp:
		h.GSOType = packet.GSOUDPL4
	case s.v6:
		h.GSOType = packet.GSOTCPv6
	}
	binary.BigEndian.PutUint16(p[l4Off+csumOff:], partialSum(p, s.v6, l4Off))
	return p, h
}

// pseudoHeader is the TCP/UDP pseudo-header of p, whose L4 header starts at
// l4Off, built byte by byte (independent of packet.PseudoSum).
func pseudoHeader(p []byte, v6 bool, l4Off int) []byte {
	l4Len := len(p) - l4Off
	if v6 {
		return append(append([]byte(nil), p[8:40]...), 0, 0, byte(l4Len>>8), byte(l4Len), 0, 0, 0, p[6])
	}
	return append(append([]byte(nil), p[12:20]...), 0, p[9], byte(l4Len>>8), byte(l4Len))
}

// partialSum is the folded pseudo-header sum a NEEDS_CSUM packet carries.
// The sums here use packet.Checksum, which packet's tests hold to RFC 1071
// and gopacket.
func partialSum(p []byte, v6 bool, l4Off int) uint16 {
	return ^packet.Checksum(pseudoHeader(p, v6, l4Off), 0)
}

// refL4Valid checks p's L4 checksum over a hand-built pseudo-header.
func refL4Valid(p []byte, v6 bool, l4Off int) bool {
	return packet.Checksum(append(pseudoHeader(p, v6, l4Off), p[l4Off:]...), 0) == 0
}

// decoded is what a receiver sees in one wire packet.
type decoded struct {
	v6      bool
	id      uint16
	seq     uint32
	tcp     *layers.TCP
	udp     *layers.UDP
	payload []byte
}

// verify decodes p with gopacket and fails unless its IP length and its IP
// and L4 checksums are valid, checked both by gopacket and by refL4Valid.
func verify(tb testing.TB, p []byte) decoded {
	tb.Helper()
	var d decoded
	first := layers.LayerTypeIPv4
	if len(p) > 0 && p[0]>>4 == 6 {
		first, d.v6 = layers.LayerTypeIPv6, true
	}
	pk := gopacket.NewPacket(p, first, gopacket.Default)
	if el := pk.ErrorLayer(); el != nil {
		tb.Fatalf("decode: %v", el.Error())
	}
	var l4Off int
	if d.v6 {
		ip := pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if int(ip.Length)+40 != len(p) {
			tb.Fatalf("IPv6 payload length %d for %d bytes", ip.Length, len(p))
		}
		l4Off = 40
		d.setL4(tb, pk, ip)
	} else {
		ip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if int(ip.Length) != len(p) {
			tb.Fatalf("IPv4 total length %d for %d bytes", ip.Length, len(p))
		}
		if _, r := ip.VerifyChecksum(); !r.Valid || packet.Checksum(p[:ip.IHL*4], 0) != 0 {
			tb.Fatalf("bad IPv4 header checksum %#04x", ip.Checksum)
		}
		d.id = ip.Id
		l4Off = int(ip.IHL) * 4
		d.setL4(tb, pk, ip)
	}
	if !refL4Valid(p, d.v6, l4Off) {
		tb.Fatalf("bad L4 checksum (hand-built pseudo-header)")
	}
	return d
}

func (d *decoded) setL4(tb testing.TB, pk gopacket.Packet, ip gopacket.NetworkLayer) {
	tb.Helper()
	if t, ok := pk.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		_ = t.SetNetworkLayerForChecksum(ip)
		if _, r := t.VerifyChecksum(); !r.Valid {
			tb.Fatalf("bad TCP checksum %#04x (gopacket)", t.Checksum)
		}
		d.tcp, d.seq, d.payload = t, t.Seq, t.Payload
		return
	}
	if u, ok := pk.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		_ = u.SetNetworkLayerForChecksum(ip)
		if _, r := u.VerifyChecksum(); !r.Valid {
			tb.Fatalf("bad UDP checksum %#04x (gopacket)", u.Checksum)
		}
		if int(u.Length) != len(u.Contents)+len(u.Payload) {
			tb.Fatalf("UDP length %d for %d bytes", u.Length, len(u.Contents)+len(u.Payload))
		}
		d.udp, d.payload = u, u.Payload
		return
	}
	tb.Fatalf("no TCP or UDP layer")
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func buffers(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
	}
	return out
}

func equalBytes(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	if !bytes.Equal(got, want) {
		tb.Fatalf("%s: got %d bytes, want %d (differ)", what, len(got), len(want))
	}
}
