package trace

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/flannelu/flannelu/internal/drop"
)

// Forwarded is the verdict for a packet the forwarder passed on. Any other
// verdict is a drop reason label (drop.Reason.String()) and is printed as
// "dropped <reason>".
const Forwarded = "forwarded"

// record is one traced packet as it waits in its slot. data aliases the
// slot's buffer and is valid until the slot goes back to the free list.
type record struct {
	ts      time.Time
	dir     drop.Direction
	peer    netip.AddrPort
	verdict string
	origLen int    // length of the packet the forwarder saw
	data    []byte // the first min(origLen, Snaplen) bytes of it
}

// decoder turns records into human lines. It reuses its layers between
// calls, so a steady stream of well-formed packets allocates nothing. Not
// safe for concurrent use: the tracer's writer goroutine owns one.
type decoder struct {
	ip4     layers.IPv4
	tcp     layers.TCP
	udp     layers.UDP
	icmp    layers.ICMPv4
	payload gopacket.Payload
	parser  *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

func newDecoder() *decoder {
	d := &decoder{decoded: make([]gopacket.LayerType, 0, 4)}
	d.parser = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &d.ip4, &d.tcp, &d.udp, &d.icmp, &d.payload)
	// A protocol we do not decode (GRE, SCTP...) ends the walk quietly;
	// the line then shows the IP protocol number.
	d.parser.IgnoreUnsupported = true
	return d
}

// appendLine appends one line, ending in '\n', describing r:
//
//	15:04:05.000000 inside  TCP 198.18.1.2:43210 > 198.18.2.3:5201 [S] len=60 peer=192.0.2.2:8285 forwarded
//
// It never fails: bytes that are not a decodable IPv4 packet give
// "malformed" (or "non-IPv4 version=N").
func (d *decoder) appendLine(dst []byte, r *record) []byte {
	dst = r.ts.AppendFormat(dst, "15:04:05.000000")
	dst = append(dst, ' ')
	dst = appendPadded(dst, r.dir.String(), 7)
	dst = append(dst, ' ')
	dst = d.appendSummary(dst, r.data)
	dst = append(dst, " len="...)
	dst = strconv.AppendInt(dst, int64(r.origLen), 10)
	if r.peer.IsValid() {
		dst = append(dst, " peer="...)
		dst = r.peer.AppendTo(dst)
	}
	dst = append(dst, ' ')
	if r.verdict == "" || r.verdict == Forwarded {
		dst = append(dst, Forwarded...)
	} else {
		dst = append(dst, "dropped "...)
		dst = appendLabel(dst, r.verdict)
	}
	return append(dst, '\n')
}

// appendSummary appends what the packet is, without its length.
func (d *decoder) appendSummary(dst, pkt []byte) []byte {
	if len(pkt) == 0 {
		return append(dst, "malformed"...)
	}
	if v := pkt[0] >> 4; v != 4 {
		dst = append(dst, "non-IPv4 version="...)
		return strconv.AppendUint(dst, uint64(v), 10)
	}
	err := d.parser.DecodeLayers(pkt, &d.decoded)
	if len(d.decoded) == 0 || d.decoded[0] != layers.LayerTypeIPv4 {
		return append(dst, "malformed"...)
	}
	ip := &d.ip4
	src, _ := netip.AddrFromSlice(ip.SrcIP)
	dstIP, _ := netip.AddrFromSlice(ip.DstIP)
	transport := gopacket.LayerTypeZero
	if len(d.decoded) > 1 {
		transport = d.decoded[1]
	}

	dst = appendProto(dst, ip.Protocol)
	dst = append(dst, ' ')
	switch transport {
	case layers.LayerTypeTCP:
		dst = appendHostPort(dst, src, uint16(d.tcp.SrcPort), dstIP, uint16(d.tcp.DstPort))
		dst = append(dst, ' ')
		dst = appendTCPFlags(dst, &d.tcp)
	case layers.LayerTypeUDP:
		dst = appendHostPort(dst, src, uint16(d.udp.SrcPort), dstIP, uint16(d.udp.DstPort))
	case layers.LayerTypeICMPv4:
		dst = appendHosts(dst, src, dstIP)
		dst = append(dst, ' ')
		dst = appendICMP(dst, &d.icmp)
	default:
		dst = appendHosts(dst, src, dstIP)
		switch {
		case ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0:
			// Only the first fragment has the transport header, and
			// gopacket decodes none of them; say which piece this is.
			dst = append(dst, " frag id="...)
			dst = strconv.AppendUint(dst, uint64(ip.Id), 10)
			dst = append(dst, " off="...)
			dst = strconv.AppendUint(dst, uint64(ip.FragOffset)*8, 10)
			if ip.Flags&layers.IPv4MoreFragments != 0 {
				dst = append(dst, '+')
			}
		case err != nil || isKnownTransport(ip.Protocol):
			// IPv4 was fine but the transport header was cut short.
			dst = append(dst, " truncated"...)
		}
	}
	return dst
}

func isKnownTransport(p layers.IPProtocol) bool {
	return p == layers.IPProtocolTCP || p == layers.IPProtocolUDP || p == layers.IPProtocolICMPv4
}

func appendProto(dst []byte, p layers.IPProtocol) []byte {
	switch p {
	case layers.IPProtocolTCP:
		return append(dst, "TCP"...)
	case layers.IPProtocolUDP:
		return append(dst, "UDP"...)
	case layers.IPProtocolICMPv4:
		return append(dst, "ICMP"...)
	}
	dst = append(dst, "proto="...)
	return strconv.AppendUint(dst, uint64(p), 10)
}

func appendHosts(dst []byte, src, dstIP netip.Addr) []byte {
	dst = src.AppendTo(dst)
	dst = append(dst, " > "...)
	return dstIP.AppendTo(dst)
}

func appendHostPort(dst []byte, src netip.Addr, sport uint16, dstIP netip.Addr, dport uint16) []byte {
	dst = netip.AddrPortFrom(src, sport).AppendTo(dst)
	dst = append(dst, " > "...)
	return netip.AddrPortFrom(dstIP, dport).AppendTo(dst)
}

// appendTCPFlags writes flags as tcpdump does: [S], [S.], [P.], [none].
func appendTCPFlags(dst []byte, t *layers.TCP) []byte {
	dst = append(dst, '[')
	n := len(dst)
	for _, f := range [...]struct {
		on bool
		c  byte
	}{{t.FIN, 'F'}, {t.SYN, 'S'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.ACK, '.'}, {t.URG, 'U'}, {t.ECE, 'E'}, {t.CWR, 'W'}} {
		if f.on {
			dst = append(dst, f.c)
		}
	}
	if len(dst) == n {
		dst = append(dst, "none"...)
	}
	return append(dst, ']')
}

var unreachCodes = [...]string{
	0: "net-unreachable", 1: "host-unreachable", 2: "proto-unreachable",
	3: "port-unreachable", 4: "frag-needed", 13: "admin-prohibited",
}

func appendICMP(dst []byte, m *layers.ICMPv4) []byte {
	typ, code := m.TypeCode.Type(), m.TypeCode.Code()
	switch typ {
	case layers.ICMPv4TypeEchoReply, layers.ICMPv4TypeEchoRequest:
		if typ == layers.ICMPv4TypeEchoReply {
			dst = append(dst, "echo-reply id="...)
		} else {
			dst = append(dst, "echo-request id="...)
		}
		dst = strconv.AppendUint(dst, uint64(m.Id), 10)
		dst = append(dst, " seq="...)
		return strconv.AppendUint(dst, uint64(m.Seq), 10)
	case layers.ICMPv4TypeDestinationUnreachable:
		if int(code) < len(unreachCodes) && unreachCodes[code] != "" {
			return append(dst, unreachCodes[code]...)
		}
		dst = append(dst, "unreachable code="...)
		return strconv.AppendUint(dst, uint64(code), 10)
	case layers.ICMPv4TypeTimeExceeded:
		return append(dst, "time-exceeded"...)
	}
	dst = append(dst, "type="...)
	dst = strconv.AppendUint(dst, uint64(typ), 10)
	dst = append(dst, " code="...)
	return strconv.AppendUint(dst, uint64(code), 10)
}

// appendPadded appends s and spaces up to width.
func appendPadded(dst []byte, s string, width int) []byte {
	dst = append(dst, s...)
	for i := len(s); i < width; i++ {
		dst = append(dst, ' ')
	}
	return dst
}

// appendLabel appends a verdict label, replacing bytes that would break
// the one-line-per-packet format (the label comes from the caller).
func appendLabel(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			c = '_'
		}
		dst = append(dst, c)
	}
	return dst
}

func appendUint(dst []byte, n uint64) []byte { return strconv.AppendUint(dst, n, 10) }
