package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/flannelu/flannelu/testbed"
)

// udpConfig leases subnets up to 198.18.200.0/24 only (SubnetMax), so that
// the tests' "nobody holds this" addresses above it never collide with a
// randomly chosen lease.
const udpConfig = `{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","Backend":{"Type":"udp"}}`

// TestUDPBackend runs three flannelu hosts with the udp backend, two pods
// each, and a fourth host that is first a stranger and then joins.
func TestUDPBackend(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-udp", 4, udpConfig)
	pcapFile := filepath.Join(c.Dir, "trace.pcap")
	startNode(t, c, 1, "--trace", "--trace-pcap", pcapFile)
	startNode(t, c, 2)
	// Host 3 leaves later: a short lease lets it expire soon after.
	startNode(t, c, 3, "--subnet-lease-ttl", "4s")
	for i := 1; i <= 3; i++ {
		if err := c.Nodes[i].AddPods(2); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[2].Pods[1].Addr)

	t.Run("etcd leases and subnet.env as flanneld writes them", func(t *testing.T) { checkFlannelState(t, c) })
	t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, allPods(c, 1, 2, 3)) })
	t.Run("wire format", func(t *testing.T) { checkWireFormat(t, c) })
	t.Run("wire format under TCP load", func(t *testing.T) { checkWireUnderLoad(t, c) })
	t.Run("100 MB TCP byte for byte", func(t *testing.T) {
		transfer(t, c.Bed, c.Hosts[0].Pods[0], c.Hosts[1].Pods[1], 100<<20)
	})
	t.Run("unknown subnet gets net unreachable", func(t *testing.T) {
		checkUnreachable(t, c, c.Hosts[0].Pods[0], "198.18.250.9")
	})
	t.Run("spoofed datagrams dropped", func(t *testing.T) { checkSpoofing(t, c) })
	t.Run("metrics", func(t *testing.T) { checkMetrics(t, c.Nodes[1], slices.Concat(commonFamilies, udpFamilies)...) })
	t.Run("late join", func(t *testing.T) {
		startNode(t, c, 4)
		if err := c.Nodes[4].AddPods(1); err != nil {
			t.Fatal(err)
		}
		waitPing(t, c.Hosts[0].Pods[0], c.Hosts[3].Pods[0].Addr)
		fullMesh(t, allPods(c, 1, 4))
	})
	t.Run("leave", func(t *testing.T) { checkLeave(t, c) })
	t.Run("trace", func(t *testing.T) { checkTrace(t, c, pcapFile) })
}

func newCluster(t *testing.T, name string, hosts int, config string) *testbed.Cluster {
	t.Helper()
	return newClusterOf(t, testbed.Options{Name: name, Hosts: hosts}, config)
}

// newClusterOf is newCluster on a testbed of any shape.
func newClusterOf(t *testing.T, bed testbed.Options, config string) *testbed.Cluster {
	t.Helper()
	return newClusterWith(t, testbed.ClusterOptions{Bed: bed, Config: config})
}

// newClusterWith is newCluster with every option (the flannelu binary is
// filled in); the cluster is closed when the test ends, with the nodes'
// logs shown if it failed.
func newClusterWith(t *testing.T, opts testbed.ClusterOptions) *testbed.Cluster {
	t.Helper()
	opts.Flannelu = flannelu
	c, err := testbed.NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("flannelu on %s:%s", n.Host.Name, testbed.Tail(n.Proc.Log, 30))
			}
		}
		c.Close()
	})
	return c
}

func startNode(t *testing.T, c *testbed.Cluster, i int, args ...string) *testbed.Node {
	t.Helper()
	n, err := c.StartNode(i, args...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkFlannelState reads back what a flanneld in the same etcd, and the
// CNI plugin, would read: one lease key per host in flanneld's key form
// with flanneld's udp value, attached to an etcd lease, and subnet.env.
func checkFlannelState(t *testing.T, c *testbed.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		n := c.Nodes[i]
		lease := n.Env.Subnet.Masked()
		key := testbed.EtcdPrefix + "/subnets/" + lease.Addr().String() + "-24"
		resp, err := c.Client.Get(ctx, key)
		if err != nil || resp.Count != 1 {
			t.Fatalf("lease key %s: %v (count %d)", key, err, resp.Count)
		}
		want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null}`, n.Host.Addr)
		if got := string(resp.Kvs[0].Value); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
		if resp.Kvs[0].Lease == 0 {
			t.Errorf("%s has no etcd lease (it would be a reservation)", key)
		}
		env, err := os.ReadFile(n.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		wantEnv := fmt.Sprintf("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=%s/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n", lease.Addr().Next())
		if string(env) != wantEnv {
			t.Errorf("%s:\n%s\nwant:\n%s", n.SubnetFile, env, wantEnv)
		}
	}
}

// checkWireFormat captures on host 1's underlay while a pod pings a pod of
// host 2: every datagram goes from port 8285 to 8285 with DF and TTL 64,
// and its payload is the inner IPv4 packet itself, nothing before it.
func checkWireFormat(t *testing.T, c *testbed.Cluster) {
	h1 := c.Hosts[0]
	file := filepath.Join(c.Dir, "wire.pcap")
	dump, err := c.Start(h1.NS, "tcpdump", "tcpdump", "-i", "eth0", "-U", "-c", "4", "-w", file, "udp port 8285")
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.WaitLog(tcpdumpListening, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	from, to := h1.Pods[0], c.Hosts[1].Pods[0]
	if out, err := testbed.Ping(from.NS, to.Addr.String(), 2); err != nil {
		t.Fatalf("ping: %v %s", err, out)
	}
	if exited, _ := dump.Wait(30 * time.Second); !exited {
		t.Fatalf("tcpdump captured fewer than 4 datagrams: %s", testbed.Tail(dump.Log, 5))
	}
	r := openPcap(t, file)
	src := gopacket.NewPacketSource(r, r.LinkType())
	seen := 0
	for p := range src.Packets() {
		seen++
		outer := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp.SrcPort != 8285 || udp.DstPort != 8285 {
			t.Errorf("datagram %d: ports %d -> %d, want 8285 -> 8285", seen, udp.SrcPort, udp.DstPort)
		}
		if outer.Flags&layers.IPv4DontFragment == 0 || outer.TTL != 64 {
			t.Errorf("datagram %d: outer DF=%v TTL=%d, want DF and TTL 64", seen, outer.Flags&layers.IPv4DontFragment != 0, outer.TTL)
		}
		inner := gopacket.NewPacket(udp.Payload, layers.LayerTypeIPv4, gopacket.Default)
		ip, ok := inner.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok || int(ip.Length) != len(udp.Payload) {
			t.Fatalf("datagram %d: payload is not exactly one IPv4 packet: % x", seen, udp.Payload)
		}
		pods := map[string]bool{from.Addr.String(): true, to.Addr.String(): true}
		if !pods[ip.SrcIP.String()] || !pods[ip.DstIP.String()] || inner.Layer(layers.LayerTypeICMPv4) == nil {
			t.Errorf("datagram %d: inner %v -> %v, want the pods' ICMP echo", seen, ip.SrcIP, ip.DstIP)
		}
	}
	if seen != 4 {
		t.Fatalf("read %d datagrams from the capture, want 4", seen)
	}
}

// checkWireUnderLoad captures the datagrams of a TCP transfer, where the
// TUN hands flannelu 64 KiB super-packets: on the wire each datagram still
// carries exactly one inner IPv4 packet of at most the overlay MTU, so a
// flanneld peer understands every one.
//
// A veth passes a UDP GSO send on whole, where a NIC (or the kernel's
// software GSO in front of one) cuts it into datagrams at the size
// flannelu gave. Turning off UDP segmentation offload on eth0 makes the
// kernel cut it before the capture point, so tcpdump sees what a wire
// would carry.
func checkWireUnderLoad(t *testing.T, c *testbed.Cluster) {
	h1 := c.Hosts[0]
	if out, err := h1.Run("ethtool", "-K", "eth0", "tx-udp-segmentation", "off"); err != nil {
		t.Fatalf("ethtool: %v %s", err, out)
	}
	defer h1.Run("ethtool", "-K", "eth0", "tx-udp-segmentation", "on") //nolint:errcheck // restores the default
	file := filepath.Join(c.Dir, "load.pcap")
	dump, err := c.Start(h1.NS, "tcpdump-load", "tcpdump", "-i", "eth0", "-U", "-s", "96", "-c", "2000", "-w", file,
		"udp and src host "+h1.Addr.String()+" and src port 8285")
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.WaitLog(tcpdumpListening, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	transfer(t, c.Bed, h1.Pods[1], c.Hosts[1].Pods[0], 20<<20)
	if exited, _ := dump.Wait(30 * time.Second); !exited {
		t.Fatalf("tcpdump captured fewer than 2000 datagrams: %s", testbed.Tail(dump.Log, 5))
	}
	r := openPcap(t, file)
	mtu := c.Nodes[1].Env.MTU
	full := 0
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Lazy)
		udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok || len(udp.Payload) < 20 {
			t.Fatalf("captured frame is not UDP with an inner header: % x", data)
		}
		inner := int(udp.Payload[2])<<8 | int(udp.Payload[3])
		if udp.Payload[0]>>4 != 4 || inner != int(udp.Length)-8 || inner > mtu {
			t.Fatalf("datagram of %d bytes carries an inner packet of %d bytes (version %d); want exactly one IPv4 packet of at most %d",
				udp.Length-8, inner, udp.Payload[0]>>4, mtu)
		}
		if inner == mtu {
			full++
		}
	}
	if full < 1000 {
		t.Errorf("only %d of 2000 datagrams were full-size (%d bytes): the TCP stream did not fill the overlay MTU", full, mtu)
	}
}

// tcpdumpListening is what tcpdump writes to stderr once its capture is
// attached: from then on it sees every packet.
var tcpdumpListening = regexp.MustCompile(`listening on `)

// openPcap opens a capture file for reading; it is closed when t ends.
func openPcap(t *testing.T, file string) *pcapgo.Reader {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return r
}

// checkUnreachable pings an address of the overlay that no host leases:
// the pod must see flannelu's ICMP net unreachable.
func checkUnreachable(t *testing.T, c *testbed.Cluster, from *testbed.Pod, to string) {
	out, err := from.Run("ping", "-n", "-c", "1", "-W", "10", to)
	if err == nil || !strings.Contains(out, "Destination Net Unreachable") {
		t.Fatalf("ping %s: want 'Destination Net Unreachable', got err=%v:\n%s", to, err, out)
	}
}

var noRoute = `flannelu_dropped_packets_total{direction="inside",reason="no_route"}`
var unknownPeer = `flannelu_dropped_packets_total{direction="outside",reason="unknown_peer"}`
var spoofedSource = `flannelu_dropped_packets_total{direction="outside",reason="spoofed_source"}`

// checkSpoofing sends datagrams that carry a valid packet for a pod of
// host 1, first from host 4 (no lease: a stranger), which must be dropped
// and counted, then from host 2 (a peer), which must arrive.
func checkSpoofing(t *testing.T, c *testbed.Cluster) {
	n1, victim := c.Nodes[1], c.Hosts[0].Pods[0]
	ln := listen7777(t, victim)
	before, err := n1.Metric(unknownPeer)
	if err != nil {
		t.Fatal(err)
	}
	inner := innerUDP(t, "198.18.230.9", victim.Addr.String(), []byte("spoofed"))
	sendFrom(t, c.Hosts[3], inner, 10)
	// flannelu counts each datagram it drops: once all ten are counted,
	// none of them can still reach the pod.
	var after float64
	if err := testbed.Eventually(30*time.Second, func() (err error) {
		if after, err = n1.Metric(unknownPeer); err == nil && after-before < 10 {
			err = fmt.Errorf("unknown_peer drops went %v -> %v, want +10", before, after)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A datagram that was forwarded anyway would sit in the pod's socket
	// by now; the short read only collects what the kernel's backlog
	// still holds (a "did not arrive" check needs some window).
	if got := readFor(ln, 100*time.Millisecond); got != 0 {
		t.Fatalf("the pod received %d spoofed datagrams from a non-peer", got)
	}
	// From a peer's address the same packet is dropped too, now for its
	// source: 198.18.230.9 is not in the peer's subnet (TestSpoofedInner-
	// Sources covers each kind of source). The peer's own pod's address
	// is delivered, so the drops were for the source and nothing else.
	spoofedBefore, _ := n1.Metric(spoofedSource)
	sendFrom(t, c.Hosts[1], inner, 3)
	waitMetricAbove(t, n1, spoofedSource, spoofedBefore+2)
	if got := readFor(ln, 100*time.Millisecond); got != 0 {
		t.Fatalf("the pod received %d datagrams with a source outside the sending peer's subnet", got)
	}
	sendFrom(t, c.Hosts[1], innerUDP(t, c.Hosts[1].Pods[0].Addr.String(), victim.Addr.String(), []byte("peer")), 3)
	ln.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := ln.Read(make([]byte, 2048)); err != nil {
		t.Fatalf("a datagram from a peer's address with its pod's source was not delivered: %v", err)
	}
}

// listen7777 opens a UDP socket on port 7777 in a pod, closed when the
// test ends: the destination of innerUDP's packets.
func listen7777(t *testing.T, pod *testbed.Pod) *net.UDPConn {
	t.Helper()
	var ln *net.UDPConn
	if err := pod.Do(func() (err error) {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// innerUDP is a UDP packet to port 7777, IPv4 or IPv6 by src's family.
func innerUDP(t *testing.T, src, dst string, payload []byte) []byte {
	var ip interface {
		gopacket.NetworkLayer
		gopacket.SerializableLayer
	}
	if s := net.ParseIP(src); s.To4() != nil {
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s.To4(), DstIP: net.ParseIP(dst).To4()}
	} else {
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: s, DstIP: net.ParseIP(dst)}
	}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 7777}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sendFrom sends payload count times to host 1's flannelu port from a
// socket opened in host h (any source port: only the address matters).
func sendFrom(t *testing.T, h *testbed.Host, payload []byte, count int) {
	t.Helper()
	sendFromTo(t, h, 8285, payload, count)
}

// sendFromTo is sendFrom to another port of host 1.
func sendFromTo(t *testing.T, h *testbed.Host, port int, payload []byte, count int) {
	t.Helper()
	sendTo(t, h, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 1}), uint16(port)), payload, count)
}

// sendTo sends payload count times to dst from a socket opened in host h.
func sendTo(t *testing.T, h *testbed.Host, dst netip.AddrPort, payload []byte, count int) {
	t.Helper()
	err := h.Do(func() error {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer conn.Close()
		for i := 0; i < count; i++ {
			if _, err := conn.Write(payload); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readFor counts the datagrams that arrive on conn within d, including
// those already queued.
func readFor(conn *net.UDPConn, d time.Duration) int {
	buf := make([]byte, 2048)
	n := 0
	conn.SetReadDeadline(time.Now().Add(d))
	for {
		if _, err := conn.Read(buf); err != nil {
			return n
		}
		n++
	}
}

// checkLeave kills host 3's flannelu; its 4 s lease expires, every peer
// drops its route, and a pod sending to it gets ICMP net unreachable.
func checkLeave(t *testing.T, c *testbed.Cluster) {
	checkLeaveTo(t, c, c.Hosts[2].Pods[0].Addr, "Destination Net Unreachable")
}

// checkLeaveTo is checkLeave for a pod address of host 3 of either family:
// once host 3's lease (named by its IPv4 subnet, or its IPv6 one in an
// IPv6-only network) has expired, a ping of target from host 1's pod must
// print want (flannelu's ICMP error), counted as no_route.
func checkLeaveTo(t *testing.T, c *testbed.Cluster, target netip.Addr, want string) {
	n3 := c.Nodes[3]
	gone := n3.Env.Subnet
	if !gone.IsValid() {
		gone = n3.Env.IPv6Subnet
	}
	n3.Proc.Signal(9)
	n3.Proc.Wait(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := testbed.Eventually(30*time.Second, func() error {
		resp, err := c.Client.Get(ctx, leaseKey(gone))
		if err == nil && resp.Count > 0 {
			err = fmt.Errorf("lease %s still in etcd", leaseKey(gone))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := c.Nodes[1].Metric(noRoute)
	if err := testbed.Eventually(30*time.Second, func() error {
		out, err := c.Hosts[0].Pods[0].Run("ping", "-n", "-c", "1", "-W", "3", target.String())
		if !strings.Contains(out, want) {
			return fmt.Errorf("ping %s after its host left: %v\n%s", target, err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if after, _ := c.Nodes[1].Metric(noRoute); after <= before {
		t.Errorf("no_route drops did not grow (%v -> %v)", before, after)
	}
}

var traceLine = regexp.MustCompile(`(?m)^\S+ inside +ICMP 198\.18\.\d+\.2 > 198\.18\.\d+\.\d+ .*forwarded$`)

// checkTrace reads host 1's trace: readable lines in its log, and a pcap
// file that gopacket reads back as IPv4 packets.
func checkTrace(t *testing.T, c *testbed.Cluster, pcapFile string) {
	logText, _ := os.ReadFile(c.Nodes[1].Proc.Log)
	if !traceLine.Match(logText) {
		t.Errorf("no trace line like %q in host 1's log:%s", traceLine, testbed.Tail(c.Nodes[1].Proc.Log, 10))
	}
	r := openPcap(t, pcapFile)
	data, _, err := r.ReadPacketData()
	if err != nil {
		t.Fatalf("trace pcap has no packet: %v", err)
	}
	p := gopacket.NewPacket(data, layers.LayerTypeIPv4, gopacket.Default)
	if p.Layer(layers.LayerTypeIPv4) == nil {
		t.Fatalf("first pcap record is not an IPv4 packet: % x", data)
	}
}
