package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/flannelu/flannelu/testbed"
)

var tooBig = `flannelu_dropped_packets_total{direction="inside",reason="too_big"}`

// TestUDPBackendIPv6 runs the udp backend, which flanneld's never did for
// IPv6, on three hosts with two CNI pods each, dual stack (IPv6 over the
// IPv6 underlay, IPv4 over IPv4 as flanneld) and IPv6 only: full-mesh ping
// and ping6, flannel0's IPv6 layout, TCP over IPv6 byte for byte, flannelu's
// ICMPv6 packet too big seen in the pod, a spoofed IPv6 source dropped and
// counted, and a peer leaving taking its IPv6 route with it.
func TestUDPBackendIPv6(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	for _, st := range []stack{dualStack, ipv6Only} {
		t.Run(st.String(), func(t *testing.T) {
			t.Parallel()
			c := newClusterOf(t, testbed.Options{Name: "e2e-u" + st.suffix(), Hosts: 3, IPv6: true}, st.config("udp"))
			for i := 1; i <= 3; i++ {
				var args []string
				if i == 3 {
					args = []string{"--subnet-lease-ttl", "4s"} // it leaves later
				}
				if err := startNode(t, c, i, args...).AddCNIPods(2); err != nil {
					t.Fatal(err)
				}
			}
			waitPing(t, c.Hosts[0].Pods[0], c.Hosts[2].Pods[1].Addr6)
			t.Run("full mesh ping and ping6", func(t *testing.T) { fullMesh(t, podsOf(c, st, 1, 2, 3)) })
			t.Run("flannel0 layout", func(t *testing.T) { checkTUN6(t, c, st) })
			if st.v4 {
				t.Run("each family over its own underlay", func(t *testing.T) { checkUnderlays(t, c) })
			}
			t.Run("32 MB TCP over IPv6 byte for byte", func(t *testing.T) {
				transfer(t, c.Bed, v6Pod(c.Hosts[0].Pods[0]), v6Pod(c.Hosts[1].Pods[1]), 32<<20)
			})
			if st.v4 {
				t.Run("8 MB TCP over IPv4 byte for byte", func(t *testing.T) {
					transfer(t, c.Bed, c.Hosts[0].Pods[0], c.Hosts[1].Pods[1], 8<<20)
				})
			}
			t.Run("packet too big reaches the pod", func(t *testing.T) { checkTooBig6(t, c) })
			t.Run("spoofed IPv6 source dropped", func(t *testing.T) { checkSpoofing6(t, c) })
			t.Run("peer leaves", func(t *testing.T) {
				// flannelu's ICMPv6 no route, as iputils prints it.
				checkLeaveTo(t, c, c.Hosts[2].Pods[0].Addr6, "Destination unreachable: No route")
			})
		})
	}
}

// podsOf lists the pods of the hosts once per family of st.
func podsOf(c *testbed.Cluster, st stack, hosts ...int) []*testbed.Pod {
	var pods []*testbed.Pod
	if st.v4 {
		pods = allPods(c, hosts...)
	}
	for _, p := range allPods(c, hosts...) {
		pods = append(pods, v6Pod(p))
	}
	return pods
}

// checkTUN6 reads host 1's flannel0 back: the IPv6 lease's network address
// as /128 (as flanneld's vxlan gives flannel-v6), one route for the whole
// IPv6 network carrying the IPv6 MTU (1500 - 48 over the IPv6 underlay),
// and the device MTU subnet.env announces.
func checkTUN6(t *testing.T, c *testbed.Cluster, st stack) {
	h, env := c.Hosts[0], c.Nodes[1].Env
	var addrs []struct {
		MTU      int `json:"mtu"`
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := ipJSON(h, &addrs, "ip", "-j", "-6", "addr", "show", "dev", "flannel0", "scope", "global"); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s/128", env.IPv6Subnet.Masked().Addr())
	var got []string
	for _, l := range addrs {
		for _, a := range l.AddrInfo {
			if a.Local != "" { // ip -j lists the addresses the scope filters out as {}
				got = append(got, fmt.Sprintf("%s/%d", a.Local, a.Prefixlen))
			}
		}
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("flannel0 global IPv6 addresses %v, want %s", got, want)
	}
	deviceMTU := map[bool]int{true: 1472, false: 1452}[st.v4]
	if len(addrs) == 1 && (addrs[0].MTU != deviceMTU || env.MTU != deviceMTU) {
		t.Errorf("flannel0 MTU %d, subnet.env %d; want %d", addrs[0].MTU, env.MTU, deviceMTU)
	}
	out := h.MustRun("ip", "-6", "route", "show", overlay6.String())
	if !strings.Contains(out, "dev flannel0") || !strings.Contains(out, "mtu 1452") {
		t.Errorf("ip -6 route show %s: %q, want dev flannel0 with mtu 1452", overlay6, out)
	}
}

// checkTooBig6 makes room for a 1468-byte packet up to flannel0 (MTUs of
// the pod, its veth, cni0 and flannel0, and the route's MTU lifted), so
// that the kernel hands it to flannelu, which carries 1452 over the IPv6
// underlay: a tcpdump in the sending pod must catch flannelu's ICMPv6
// packet too big, MTU 1452, from the far end of the tunnel, and the drop
// is counted. The layout is restored after.
func checkTooBig6(t *testing.T, c *testbed.Cluster) {
	h, from, to := c.Hosts[0], c.Hosts[0].Pods[0], c.Hosts[1].Pods[0]
	route := func(extra ...string) {
		h.MustRun(append([]string{"ip", "-6", "route", "replace", overlay6.String(), "dev", "flannel0"}, extra...)...)
	}
	for _, dev := range []string{"cni0", from.Veth, "flannel0"} {
		h.MustRun("ip", "link", "set", dev, "mtu", "1472")
	}
	from.NS.MustRun("ip", "link", "set", "eth0", "mtu", "1472")
	route()
	t.Cleanup(func() { route("mtu", "1452") })
	before, err := c.Nodes[1].Metric(tooBig)
	if err != nil {
		t.Fatal(err)
	}
	pc := capture(t, c, from.NS, "tcpdump-ptb", "eth0", "icmp6 and ip6[40] == 2")
	out, _ := from.Run("ping", "-6", "-n", "-c", "1", "-M", "do", "-s", "1420", "-W", "5", to.Addr6.String())
	var ptb []byte
	if err := testbed.Eventually(10*time.Second, func() error {
		if ptb = firstICMPv6(pc.file, 2); ptb == nil {
			return fmt.Errorf("no ICMPv6 packet too big in the pod (ping: %s)", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pc.stop()
	far := c.Nodes[2].Env.IPv6Subnet.Masked().Addr()
	if src := netip.AddrFrom16([16]byte(ptb[8:24])); src != far || binary.BigEndian.Uint32(ptb[44:48]) != 1452 {
		t.Errorf("packet too big from %v with MTU %d, want from %v (flannelu, the tunnel's far end) with 1452", src, binary.BigEndian.Uint32(ptb[44:48]), far)
	}
	waitMetricAbove(t, c.Nodes[1], tooBig, before)
}

// checkUnderlays captures flannel's port on host 1's eth0 while a pod
// pings a pod of host 2 over IPv4 and over IPv6: each inner family must
// travel in UDP over the underlay of its own family, the datagram's
// payload the inner packet itself.
func checkUnderlays(t *testing.T, c *testbed.Cluster) {
	from, to := c.Hosts[0].Pods[0], c.Hosts[1].Pods[0]
	pc := capture(t, c, c.Hosts[0].NS, "tcpdump-underlays", "eth0", "udp port 8285")
	for _, dst := range []netip.Addr{to.Addr, to.Addr6} {
		if out, err := testbed.Ping(from.NS, dst.String(), 2); err != nil {
			t.Fatalf("ping %s: %v\n%s", dst, err, out)
		}
	}
	seen := map[string]int{}
	if err := testbed.Eventually(10*time.Second, func() error {
		seen = innerFamilies(pc.file)
		if seen["4 in 4"] < 4 || seen["6 in 6"] < 4 {
			return fmt.Errorf("datagrams by inner in outer family: %v, want 4 each of 4 in 4 and 6 in 6", seen)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pc.stop()
	if seen = innerFamilies(pc.file); seen["6 in 4"]+seen["4 in 6"] != 0 {
		t.Errorf("datagrams by inner in outer family: %v, want none across families", seen)
	}
}

// innerFamilies counts the UDP datagrams of a pcap file by the IP version
// of their payload and of their outer header ("6 in 4": IPv6 inner over
// IPv4).
func innerFamilies(file string) map[string]int {
	seen := map[string]int{}
	eachPacket(file, func(p gopacket.Packet) bool {
		udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if ok && len(udp.Payload) > 0 {
			outer := "4"
			if nl := p.NetworkLayer(); nl != nil && nl.LayerType() == layers.LayerTypeIPv6 { // the outer header
				outer = "6"
			}
			seen[fmt.Sprintf("%d in %s", udp.Payload[0]>>4, outer)]++
		}
		return true
	})
	return seen
}

// firstICMPv6 returns the first IPv6 packet in a pcap file whose ICMPv6
// type is typ, nil when there is none yet.
func firstICMPv6(file string, typ uint8) []byte {
	var found []byte
	eachPacket(file, func(p gopacket.Packet) bool {
		if ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok && ip.NextHeader == layers.IPProtocolICMPv6 && len(ip.Payload) >= 8 && ip.Payload[0] == typ {
			found = append(append([]byte(nil), ip.Contents...), ip.Payload...)
			return false
		}
		return true
	})
	return found
}

// eachPacket decodes the packets of a pcap file (as far as tcpdump has
// written it) until fn returns false.
func eachPacket(file string, fn func(gopacket.Packet) bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return
	}
	for {
		data, _, err := r.ReadPacketData()
		if err != nil || !fn(gopacket.NewPacket(data, r.LinkType(), gopacket.Default)) {
			return
		}
	}
}

// checkSpoofing6 sends host 1 datagrams over the IPv6 underlay from host 2
// (a peer) whose inner IPv6 source lies in host 3's subnet: dropped and
// counted as spoofed_source, never in the pod; the same packet with host
// 2's own pod as source is delivered.
func checkSpoofing6(t *testing.T, c *testbed.Cluster) {
	n1, victim := c.Nodes[1], c.Hosts[0].Pods[0]
	var ln *net.UDPConn
	if err := victim.Do(func() (err error) {
		ln, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	underlay6 := netip.AddrPortFrom(testbed.HostAddrV6(1), 8285)
	send := func(src netip.Addr, count int) {
		sendTo(t, c.Hosts[1], underlay6, innerUDP(t, src.String(), victim.Addr6.String(), []byte("spoofed?")), count)
	}
	before, err := n1.Metric(spoofedSource)
	if err != nil {
		t.Fatal(err)
	}
	send(c.Hosts[2].Pods[0].Addr6, 3)
	waitMetricAbove(t, n1, spoofedSource, before+2)
	if got := readFor(ln, 100*time.Millisecond); got != 0 {
		t.Fatalf("the pod received %d datagrams with another peer's IPv6 source", got)
	}
	send(c.Hosts[1].Pods[0].Addr6, 1)
	ln.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := ln.Read(make([]byte, 2048)); err != nil {
		t.Fatalf("a datagram from the peer's own IPv6 pod address was not delivered: %v", err)
	}
}
