//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
	"golang.org/x/sys/unix"
)

func TestParsePeer(t *testing.T) {
	for _, tc := range []struct {
		in        string
		lease     string
		host      string
		wantError string
	}{
		{in: "198.18.2.0/24=192.0.2.2", lease: "198.18.2.0/24", host: "192.0.2.2"},
		{in: "198.18.0.0/16=203.0.113.7", lease: "198.18.0.0/16", host: "203.0.113.7"},
		{in: "0.0.0.0/0=192.0.2.9", lease: "0.0.0.0/0", host: "192.0.2.9"},
		{in: "198.18.2.0/24", wantError: "want <lease>=<host>"},
		{in: "198.18.2.0/24=", wantError: "host is not an IPv4 address"},
		{in: "=192.0.2.2", wantError: "lease is not an IPv4 prefix"},
		{in: "198.18.2.0=192.0.2.2", wantError: "lease is not an IPv4 prefix"},
		{in: "2001:db8::/64=192.0.2.2", wantError: "lease is not an IPv4 prefix"},
		{in: "198.18.2.1/24=192.0.2.2", wantError: "not a network address"},
		{in: "198.18.2.0/24=2001:db8::1", wantError: "host is not an IPv4 address"},
		{in: "198.18.2.0/24=192.0.2.2:8285", wantError: "host is not an IPv4 address"},
	} {
		p, err := parsePeer(tc.in)
		if tc.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantError) {
				t.Errorf("parsePeer(%q) = %v, %v; want error %q", tc.in, p.lease, err, tc.wantError)
			}
			continue
		}
		if err != nil || p.lease.String() != tc.lease || netip.AddrFrom4(p.to.Addr).String() != tc.host || p.to.Port != floorPort {
			t.Errorf("parsePeer(%q) = %v %+v, %v", tc.in, p.lease, p.to, err)
		}
	}
}

func TestPeerFlag(t *testing.T) {
	var peers peerTable
	fs, local, _, _ := forwardFlags(&peers)
	if err := fs.Parse([]string{"-local", "192.0.2.1", "-peer", "198.18.2.0/24=192.0.2.2", "-peer", "198.18.3.0/24=192.0.2.3"}); err != nil {
		t.Fatal(err)
	}
	if got := (peerFlag{&peers}).String(); *local != "192.0.2.1" || got != "198.18.2.0/24=192.0.2.2 198.18.3.0/24=192.0.2.3" {
		t.Errorf("-local %q, peers %q", *local, got)
	}
	fs, _, _, _ = forwardFlags(&peers)
	fs.SetOutput(io.Discard)
	if err := fs.Parse([]string{"-peer", "junk"}); err == nil {
		t.Error("-peer junk accepted")
	}
}

func TestPeerLookup(t *testing.T) {
	var table peerTable
	for _, v := range []string{"198.18.2.0/24=192.0.2.2", "198.18.3.0/24=192.0.2.3"} {
		p, err := parsePeer(v)
		if err != nil {
			t.Fatal(err)
		}
		table = append(table, p)
	}
	for _, tc := range []struct {
		pkt  []byte
		want string
	}{
		{ipv4To("198.18.2.2"), "192.0.2.2"},
		{ipv4To("198.18.3.255"), "192.0.2.3"},
		{ipv4To("198.18.4.2"), ""},
		{ipv4To("198.18.2.2")[:19], ""},                 // too short
		{append([]byte{0x60}, make([]byte, 39)...), ""}, // IPv6
	} {
		got := ""
		if to := table.lookup(tc.pkt); to != nil {
			got = netip.AddrFrom4(to.Addr).String()
		}
		if got != tc.want {
			t.Errorf("lookup(% x) = %q, want %q", tc.pkt[16:min(20, len(tc.pkt))], got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { table.lookup(ipv4Pkt) }); n != 0 {
		t.Errorf("lookup allocates %v times", n)
	}
}

var ipv4Pkt = ipv4To("198.18.3.2")

// ipv4To is a minimal IPv4 header to dst (the forwarder reads nothing else).
func ipv4To(dst string) []byte {
	pkt := make([]byte, 28)
	pkt[0] = 0x45
	a := netip.MustParseAddr(dst).As4()
	copy(pkt[16:], a[:])
	return pkt
}

// TestForwarderSteps runs both directions of the forwarder once per
// packet, with a datagram socketpair standing in for the TUN and a UDP
// socket on loopback for the peer, and checks they allocate nothing.
func TestForwarderSteps(t *testing.T) {
	tun, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peerSock, peerAddr := loopbackUDP(t)
	fwdSock, fwdAddr := loopbackUDP(t)
	t.Cleanup(func() { unix.Close(tun[0]); unix.Close(tun[1]) })
	p, err := parsePeer("198.18.2.0/24=127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p.to.Port = peerAddr.Port
	f := &forwarder{tun: tun[0], sock: fwdSock, peers: peerTable{p}}
	buf, in := make([]byte, floorBuf), make([]byte, 2048)
	pkt := ipv4To("198.18.2.2")

	toPeer := func() {
		if _, err := unix.Write(tun[1], pkt); err != nil {
			t.Fatal(err)
		}
		if err := f.toPeer(buf); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Read(peerSock, in); err != nil || !bytes.Equal(in[:n], pkt) {
			t.Fatalf("peer got % x, %v; want % x", in[:max(n, 0)], err, pkt)
		}
	}
	fromPeer := func() {
		if err := unix.Sendto(peerSock, pkt, 0, fwdAddr); err != nil {
			t.Fatal(err)
		}
		if err := f.fromPeer(buf); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Read(tun[1], in); err != nil || !bytes.Equal(in[:n], pkt) {
			t.Fatalf("TUN got % x, %v; want % x", in[:max(n, 0)], err, pkt)
		}
	}
	for name, step := range map[string]func(){"to peer": toPeer, "from peer": fromPeer} {
		if n := testing.AllocsPerRun(100, step); n != 0 {
			t.Errorf("%s: %v allocations per packet", name, n)
		}
	}

	// No lease for 198.18.9.2: read from the TUN, sent nowhere.
	if _, err := unix.Write(tun[1], ipv4To("198.18.9.2")); err != nil {
		t.Fatal(err)
	}
	if err := f.toPeer(buf); err != nil {
		t.Fatal(err)
	}
	if n, _, err := unix.Recvfrom(peerSock, in, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Errorf("unroutable packet forwarded: %d bytes, %v", n, err)
	}
}

// TestForwarderPoll runs the poll form's wait-and-drain step with a
// packet waiting in each direction at once: one wake-up moves both, a
// burst of three datagrams is drained in the same turn, and a step
// allocates nothing.
func TestForwarderPoll(t *testing.T) {
	tun, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(tun[0]); unix.Close(tun[1]) })
	peerSock, peerAddr := loopbackUDP(t)
	fwdSock, fwdAddr := loopbackUDP(t)
	p, err := parsePeer("198.18.2.0/24=127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p.to.Port = peerAddr.Port
	f := &forwarder{tun: tun[0], sock: fwdSock, peers: peerTable{p}}
	fds, err := f.pollMode()
	if err != nil {
		t.Fatal(err)
	}
	buf, in := make([]byte, floorBuf), make([]byte, 2048)
	out, back := ipv4To("198.18.2.2"), ipv4To("198.18.1.2")
	both := func(datagrams int) {
		if _, err := unix.Write(tun[1], out); err != nil {
			t.Fatal(err)
		}
		for range datagrams {
			if err := unix.Sendto(peerSock, back, 0, fwdAddr); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.pollOnce(fds, buf); err != nil {
			t.Fatal(err)
		}
		// Nothing may be left: every read below must find its packet
		// without waiting.
		if n, err := f.recv(peerSock, in, unix.MSG_DONTWAIT); err != nil || !bytes.Equal(in[:n], out) {
			t.Fatalf("peer got % x, %v; want % x", in[:max(n, 0)], err, out)
		}
		for i := range datagrams {
			if n, err := f.recv(tun[1], in, unix.MSG_DONTWAIT); err != nil || !bytes.Equal(in[:n], back) {
				t.Fatalf("TUN packet %d: % x, %v; want % x", i, in[:max(n, 0)], err, back)
			}
		}
	}
	both(3)
	if n := testing.AllocsPerRun(100, func() { both(1) }); n != 0 {
		t.Errorf("%v allocations per poll turn", n)
	}
}

// loopbackUDP is a blocking UDP socket bound to a free port on 127.0.0.1.
func loopbackUDP(t *testing.T) (int, *unix.SockaddrInet4) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, sa.(*unix.SockaddrInet4)
}

func TestFloorCommands(t *testing.T) {
	hosts := []*testbed.Host{
		{Index: 1, Addr: netip.MustParseAddr("192.0.2.1")},
		{Index: 2, Addr: netip.MustParseAddr("192.0.2.2")},
	}
	if got, want := strings.Join(floorArgs(floorPath, hosts[0], hosts), " "), "-local 192.0.2.1 -peer 198.18.2.0/24=192.0.2.2"; got != want {
		t.Errorf("floorArgs: %q, want %q", got, want)
	}
	if got, want := strings.Join(floorArgs(floorPollPath, hosts[1], hosts), " "), "-local 192.0.2.2 -poll -peer 198.18.1.0/24=192.0.2.1"; got != want {
		t.Errorf("floorArgs, poll form: %q, want %q", got, want)
	}
	if got, want := strings.Join(floorArgs(floorRawPath, hosts[1], hosts), " "), "-local 192.0.2.2 -poll -raw -peer 198.18.1.0/24=192.0.2.1"; got != want {
		t.Errorf("floorArgs, raw poll form: %q, want %q", got, want)
	}
	var lines []string
	for _, c := range floorDevice(manualSubnet(2)) {
		lines = append(lines, strings.Join(c, " "))
	}
	if got, want := strings.Join(lines, "\n"), `ip link set flannel0 mtu 1472
ip addr add 198.18.2.0/32 dev flannel0
sysctl -qew net.ipv6.conf.flannel0.disable_ipv6=1
ip link set flannel0 up
ip route add 198.18.0.0/16 dev flannel0 scope link`; got != want {
		t.Errorf("floorDevice:\n%s\nwant\n%s", got, want)
	}
	if needsFlannelu(floorPath) || needsFlannelu(floorPollPath) || needsFlannelu("vxlan-manual") || needsFlannelu(flanneldPath) ||
		!needsFlannelu("udp") {
		t.Error("needsFlannelu: only flannelu's own paths need it")
	}
}

// TestFloorSetup builds the udp-floor testbed (about 3 s as root): both
// flannel0s configured as flannelu's udp backend would, the pods reaching
// each other through the forwarders, and the forwarders gone with the bed.
func TestFloorSetup(t *testing.T) {
	s := setUp(t, floorPath)
	if len(s.helpers) != 2 {
		t.Fatalf("%d forwarders, want 2", len(s.helpers))
	}
	for _, h := range s.bed.Hosts {
		out, err := h.Run("ip", "-j", "addr", "show", "dev", floorTUN)
		if err != nil {
			t.Fatal(err)
		}
		var links []struct {
			MTU      int      `json:"mtu"`
			Flags    []string `json:"flags"`
			AddrInfo []struct {
				Family    string `json:"family"`
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
			t.Fatalf("%s: ip -j addr: %v %s", h.Name, err, out)
		}
		l := links[0]
		want := manualSubnet(h.Index).Addr().String()
		if l.MTU != floorMTU || !strings.Contains(strings.Join(l.Flags, ","), "UP") ||
			len(l.AddrInfo) != 1 || l.AddrInfo[0].Family != "inet" || l.AddrInfo[0].Local != want || l.AddrInfo[0].PrefixLen != 32 {
			t.Errorf("%s: %s is %+v, want MTU %d, up, only %s/32", h.Name, floorTUN, l, floorMTU, want)
		}
		if out, err := h.Run("ip", "route", "show", "dev", floorTUN); err != nil || strings.TrimSpace(out) != "198.18.0.0/16 scope link" {
			t.Errorf("%s: routes via %s: %q %v", h.Name, floorTUN, out, err)
		}
		// flanneld's default FORWARD rules, as flannelu installs them.
		wantFwd := `-N FLANNEL-FWD
-A FLANNEL-FWD -s 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`
		if out, err := h.Run("iptables", "-S", "FLANNEL-FWD"); err != nil || strings.TrimSpace(out) != wantFwd {
			t.Errorf("%s: iptables -S FLANNEL-FWD:\n%s%v\nwant\n%s", h.Name, out, err, wantFwd)
		}
		if out, err := h.Run("iptables", "-S", "FORWARD"); err != nil || !strings.Contains(out, "-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD") {
			t.Errorf("%s: iptables -S FORWARD has no jump to FLANNEL-FWD:\n%s%v", h.Name, out, err)
		}
	}
	release(s.tb)
	for _, h := range s.helpers {
		if !h.proc.Exited() {
			t.Errorf("forwarder on %s still runs after teardown", h.host)
		}
		if !strings.Contains(testbed.Tail(h.proc.Log, 5), "forward: created flannel0") {
			t.Errorf("forwarder on %s log:%s", h.host, testbed.Tail(h.proc.Log, 5))
		}
	}
}

// TestRawFloorStops builds the raw poll floor with the hosts pinned (about
// 3 s as root): there its forwarder has one P, which its thread keeps
// while it sleeps in poll, yet the pods reach each other and SIGTERM ends
// it cleanly (the preemption signal wakes the poll, which then yields to
// the signal handler's goroutine) instead of the testbed's SIGKILL 5 s
// later.
func TestRawFloorStops(t *testing.T) {
	s := setUp(t, floorRawPath, "-pin")
	for _, h := range s.helpers {
		start := time.Now()
		if err := h.proc.Stop(); err != nil || time.Since(start) > 4*time.Second {
			t.Errorf("forwarder on %s: stopped after %v: %v%s", h.host, time.Since(start), err, testbed.Tail(h.proc.Log, 5))
		}
		if !strings.Contains(testbed.Tail(h.proc.Log, 5), "one thread in poll, raw system calls") {
			t.Errorf("forwarder on %s log:%s", h.host, testbed.Tail(h.proc.Log, 5))
		}
	}
}
