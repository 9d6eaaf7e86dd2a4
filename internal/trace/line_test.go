package trace

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/flannelu/flannelu/internal/drop"
)

var at = time.Date(2024, 5, 6, 12, 4, 5, 123456789, time.UTC)

func line(t *testing.T, dir drop.Direction, pkt []byte, peer, verdict string) string {
	t.Helper()
	var p netip.AddrPort
	if peer != "" {
		p = netip.MustParseAddrPort(peer)
	}
	r := record{ts: at, dir: dir, peer: p, verdict: verdict, origLen: len(pkt), data: pkt}
	return string(newDecoder().appendLine(nil, &r))
}

func TestLineFormats(t *testing.T) {
	frag := dnsUDP(t)
	frag[6], frag[7] = 0x20|0x00, 185 // MF set, offset 185*8 = 1480

	for _, c := range []struct {
		name    string
		dir     drop.Direction
		pkt     []byte
		peer    string
		verdict string
		want    string
	}{
		{"tcp syn", drop.Inside, tcpSYN(t), "192.0.2.2:8285", Forwarded,
			"12:04:05.123456 inside  TCP 198.18.1.2:43210 > 198.18.2.3:5201 [S] len=60 peer=192.0.2.2:8285 forwarded\n"},
		{"icmp echo reply", drop.Outside, echoReply(t), "192.0.2.2:8285", Forwarded,
			"12:04:05.123456 outside ICMP 198.18.2.3 > 198.18.1.2 echo-reply id=7 seq=1 len=84 peer=192.0.2.2:8285 forwarded\n"},
		{"udp dropped", drop.Outside, dnsUDP(t), "203.0.113.9:8285", drop.UnknownPeer.String(),
			"12:04:05.123456 outside UDP 198.18.9.9:53 > 198.18.1.2:999 len=40 peer=203.0.113.9:8285 dropped unknown_peer\n"},
		{"malformed short", drop.Outside, []byte{0x45, 0, 0}, "203.0.113.9:8285", "malformed",
			"12:04:05.123456 outside malformed len=3 peer=203.0.113.9:8285 dropped malformed\n"},
		{"empty", drop.Inside, nil, "", Forwarded,
			"12:04:05.123456 inside  malformed len=0 forwarded\n"},
		{"ipv6 no peer", drop.Inside, append([]byte{0x60}, make([]byte, 39)...), "", "not_ipv4",
			"12:04:05.123456 inside  non-IPv4 version=6 len=40 dropped not_ipv4\n"},
		{"tcp truncated", drop.Inside, tcpSYN(t)[:30], "", "no_route",
			"12:04:05.123456 inside  TCP 198.18.1.2 > 198.18.2.3 truncated len=30 dropped no_route\n"},
		{"fragment", drop.Inside, frag, "192.0.2.2:8285", "",
			"12:04:05.123456 inside  UDP 198.18.9.9 > 198.18.1.2 frag id=4660 off=1480+ len=40 peer=192.0.2.2:8285 forwarded\n"},
		{"label sanitized", drop.Inside, dnsUDP(t), "", "bad\nlabel",
			"12:04:05.123456 inside  UDP 198.18.9.9:53 > 198.18.1.2:999 len=40 dropped bad_label\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := line(t, c.dir, c.pkt, c.peer, c.verdict); got != c.want {
				t.Errorf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestLineTCPFlagsAndICMPKinds(t *testing.T) {
	synack := tcpSYN(t)
	synack[20+13] = 0x12 // SYN|ACK
	if got := line(t, drop.Outside, synack, "", ""); !bytes.Contains([]byte(got), []byte(" [S.] ")) {
		t.Errorf("SYN|ACK: %q, want [S.]", got)
	}
	rst := tcpSYN(t)
	rst[20+13] = 0
	if got := line(t, drop.Outside, rst, "", ""); !bytes.Contains([]byte(got), []byte(" [none] ")) {
		t.Errorf("no flags: %q, want [none]", got)
	}
	unreach := echoReply(t)
	unreach[20], unreach[21] = 3, 0 // destination unreachable, net
	if got := line(t, drop.Inside, unreach, "", ""); !bytes.Contains([]byte(got), []byte("ICMP 198.18.2.3 > 198.18.1.2 net-unreachable len=84")) {
		t.Errorf("net unreachable: %q", got)
	}
	gre := dnsUDP(t)
	gre[9] = 47
	if got := line(t, drop.Inside, gre, "", ""); !bytes.Contains([]byte(got), []byte("proto=47 198.18.9.9 > 198.18.1.2 len=40")) {
		t.Errorf("GRE: %q", got)
	}
}

// FuzzTraceLine: any bytes give exactly one line, ending in the verdict,
// and never a panic.
func FuzzTraceLine(f *testing.F) {
	f.Add(tcpSYN(f))
	f.Add(echoReply(f))
	f.Add(dnsUDP(f))
	f.Add([]byte{0x45, 0, 0})
	f.Add([]byte{})
	f.Add([]byte{0x46, 0, 0, 24, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 2, 198, 18, 2, 3, 0x44, 4, 0, 0})
	f.Add(tcpSYN(f)[:34])
	d := newDecoder()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r := record{ts: at, dir: drop.Outside, origLen: len(pkt), data: pkt, verdict: "x"}
		got := d.appendLine(nil, &r)
		if bytes.Count(got, []byte("\n")) != 1 || !bytes.HasSuffix(got, []byte(" dropped x\n")) {
			t.Fatalf("not one line ending in the verdict: %q", got)
		}
	})
}
