package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// ipipConfig is the ipip network; %s adds Backend options.
const ipipConfig = `{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","Backend":{"Type":"ipip"%s}}`

// routedHost3 is host 3's underlay address in TestIPIP: another subnet,
// behind the switch namespace as a router, so that DirectRouting sees it
// off the link.
var (
	routedHost3 = netip.MustParseAddr("198.51.100.3")
	routerAddr  = netip.MustParseAddr("198.51.100.254")
)

// TestIPIP runs the ipip backend, which on this machine's kernel (no ipip
// module) is the userspace path: two hosts, then three, the third on a
// routed subnet; a hand-made peer that speaks IPIP as the kernel's ipip
// device does; then DirectRouting on (the peer on the link gets a plain
// route, the routed one the tunnel) and off again (the plain route goes).
func TestIPIP(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-ipip", 3, fmt.Sprintf(ipipConfig, ""))
	routeHost3(t, c)
	args := []string{"--reconcile-interval", "500ms", "--log-level", "debug"}
	for i := 1; i <= 2; i++ {
		startNode(t, c, i, args...)
		if err := c.Nodes[i].AddPods(1); err != nil {
			t.Fatal(err)
		}
	}
	p1, p2 := c.Hosts[0].Pods[0], c.Hosts[1].Pods[0]
	waitPing(t, p1, p2.Addr)

	t.Run("two hosts: lease, subnet.env and device as flanneld's ipip", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			checkIPIPState(t, c, i)
		}
	})
	t.Run("two hosts: IPIP on the wire, the tunnel no hop", func(t *testing.T) {
		checkIPIPWire(t, c, 1, p1, p2, true)
		// The kernel's tunnel lowers no TTL: a reply crosses two
		// forwarding hosts (64 - 2), as with flanneld's ipip or host-gw.
		if out, err := testbed.Ping(p1.NS, p2.Addr.String(), 1); err != nil || !strings.Contains(out, "ttl=62") {
			t.Errorf("ping %v -> %v: %v\n%s\nwant ttl=62", p1.Addr, p2.Addr, err, out)
		}
	})
	t.Run("two hosts: 32 MB TCP byte for byte", func(t *testing.T) { transfer(t, c.Bed, p1, p2, 32<<20) })

	startNode(t, c, 3, args...)
	if err := c.Nodes[3].AddPods(1); err != nil {
		t.Fatal(err)
	}
	p3 := c.Hosts[2].Pods[0]
	t.Run("three hosts: full mesh ping", func(t *testing.T) { fullMesh(t, allPods(c, 1, 2, 3)) })
	t.Run("a peer speaking IPIP as the kernel's ipip device", func(t *testing.T) { checkKernelStylePeer(t, c, p1) })
	t.Run("metrics", func(t *testing.T) {
		want := slices.Concat(commonFamilies, []string{"flannelu_peer_errors_total"})
		for _, f := range udpFamilies {
			if f != "flannelu_trace_dropped_records_total" { // --trace only
				want = append(want, f)
			}
		}
		checkMetrics(t, c.Nodes[1], want...)
		if v, err := c.Nodes[1].Metric(`flannelu_forwarded_packets_total{direction="outside"}`); err != nil || v < 6 {
			t.Errorf("host 1 forwarded %v packets from peers (%v): the udp backend's counters count the ipip path", v, err)
		}
	})

	restartIPIP(t, c, `,"DirectRouting":true`, args)
	t.Run("DirectRouting: a plain route to the peer on the link, the tunnel to the routed one", func(t *testing.T) {
		fullMesh(t, allPods(c, 1, 2, 3))
		if r := routeTo(t, c.Hosts[0], c.Nodes[2].Env.Subnet.Masked()); !strings.Contains(r, "via 192.0.2.2 dev eth0") {
			t.Errorf("host 1's route to host 2's subnet %q, want via 192.0.2.2 dev eth0", r)
		}
		if r := routeTo(t, c.Hosts[0], c.Nodes[3].Env.Subnet.Masked()); r != "" {
			t.Errorf("host 1 has a route %q to the routed host's subnet, want none (the tunnel's network route)", r)
		}
		checkIPIPWire(t, c, 1, p1, p2, false)
		checkIPIPWire(t, c, 1, p1, p3, true)
	})
	t.Run("DirectRouting: 32 MB TCP through the tunnel to the routed host", func(t *testing.T) { transfer(t, c.Bed, p1, p3, 32<<20) })

	restartIPIP(t, c, "", args)
	t.Run("DirectRouting turned off: the plain routes go", func(t *testing.T) {
		for _, hosts := range [][2]int{{1, 2}, {2, 1}} {
			h, sn := c.Hosts[hosts[0]-1], c.Nodes[hosts[1]].Env.Subnet.Masked()
			if err := testbed.Eventually(10*time.Second, func() error {
				if r := routeTo(t, h, sn); r != "" {
					return fmt.Errorf("host %d still routes %v: %s", hosts[0], sn, r)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		fullMesh(t, allPods(c, 1, 2, 3))
		checkIPIPWire(t, c, 1, p1, p2, true)
	})
	t.Run("a second flannelu on a host: the first leaves before it opens the device", func(t *testing.T) {
		old := c.Nodes[1]
		next, err := c.Start(c.Hosts[0].NS, "flannelu-host1-next", old.Args...)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitLeft(old.Proc); err != nil {
			t.Fatal(err)
		}
		if err := next.WaitLog(regexp.MustCompile(`msg=forwarding`), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		waitPing(t, p1, p3.Addr)
		if next.Exited() {
			t.Fatalf("the second flannelu exited:%s", testbed.Tail(next.Log, 10))
		}
	})
}

// TestIPIPKubernetes checks the ipip backend once in Kubernetes mode:
// flanneld's annotations (backend-type ipip, backend-data null, public-ip)
// and pods of three nodes reaching each other.
func TestIPIPKubernetes(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	k := newKubeCluster(t, "ipip", ipv4)
	t.Run("annotations and subnet.env as flanneld writes them", k.checkAnnotations)
	t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, allPods(k.c, 1, 2, 3)) })
}

// routeHost3 moves host 3 to 198.51.100.3/24, routed by the switch
// namespace (198.51.100.254 on its bridge).
func routeHost3(t *testing.T, c *testbed.Cluster) {
	t.Helper()
	c.Switch.Exec(t, "ip", "addr", "add", routerAddr.String()+"/24", "dev", "br0")
	c.Switch.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	h := c.Hosts[2]
	h.Exec(t, "ip", "addr", "flush", "dev", "eth0")
	h.Exec(t, "ip", "addr", "add", routedHost3.String()+"/24", "dev", "eth0")
	h.Exec(t, "ip", "route", "add", "default", "via", routerAddr.String())
	h.Addr = routedHost3
}

// restartIPIP stops every node, writes the ipip config with opts, and
// starts them again (each keeps its lease and pods).
func restartIPIP(t *testing.T, c *testbed.Cluster, opts string, args []string) {
	t.Helper()
	for i := 1; i <= 3; i++ {
		if err := c.Nodes[i].Stop(); err != nil {
			t.Fatalf("stop host %d: %v", i, err)
		}
	}
	etcdPut(t, c, testbed.EtcdPrefix+"/config", fmt.Sprintf(ipipConfig, opts))
	for i := 1; i <= 3; i++ {
		startNode(t, c, i, args...)
	}
}

// checkIPIPState reads host i's lease and subnet.env back, and its
// device: the userspace path's TUN flannel.ipip, MTU external - 20, the
// lease's network address as /32 and the network routed into it.
func checkIPIPState(t *testing.T, c *testbed.Cluster, i int) {
	t.Helper()
	n := c.Nodes[i]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Client.Get(ctx, subnetKey(n))
	if err != nil || resp.Count != 1 {
		t.Fatalf("lease %s: %v", subnetKey(n), err)
	}
	if got, want := string(resp.Kvs[0].Value), fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"ipip"}`, n.Host.Addr); got != want {
		t.Errorf("lease %s = %s, want flanneld's %s", subnetKey(n), got, want)
	}
	if n.Env.MTU != 1480 {
		t.Errorf("host %d FLANNEL_MTU %d, want 1480", i, n.Env.MTU)
	}
	link := n.Host.MustRun("ip", "-d", "-o", "link", "show", "flannel.ipip")
	addr := n.Host.MustRun("ip", "-o", "-4", "addr", "show", "dev", "flannel.ipip")
	route := n.Host.MustRun("ip", "route", "show", "198.18.0.0/16")
	if !strings.Contains(link, "mtu 1480") || !strings.Contains(link, "tun type tun") ||
		!strings.Contains(addr, n.Env.Subnet.Masked().Addr().String()+"/32") || !strings.Contains(route, "dev flannel.ipip") {
		t.Errorf("host %d: device %q, address %q, route %q; want a TUN flannel.ipip, MTU 1480, %v/32, the network through it",
			i, link, addr, route, n.Env.Subnet.Masked().Addr())
	}
	if log, _ := os.ReadFile(n.Proc.Log); !strings.Contains(string(log), `path=userspace`) {
		t.Errorf("host %d's log does not say which ipip path it took", i)
	}
}

// checkIPIPWire pings from one pod to another while tcpdump watches host
// on's underlay: with tunnel every echo goes as IP protocol 4 between the
// hosts' public addresses, the outer header the kernel's ipip device's
// (TTL and DF of the inner packet, 20 bytes, then the inner packet and
// nothing else); without, plain ICMP between the pods and no protocol 4.
func checkIPIPWire(t *testing.T, c *testbed.Cluster, on int, from, to *testbed.Pod, tunnel bool) {
	t.Helper()
	dump := capture(t, c, c.Hosts[on-1].NS, fmt.Sprintf("ipip-wire-%s-%s-%v", from.Addr, to.Addr, tunnel), "eth0", "ip proto 4 or icmp")
	var w wireCount
	// tcpdump reads what the kernel caught in blocks: ping until it shows
	// at least three echoes each way.
	err := testbed.Eventually(15*time.Second, func() error {
		if out, err := testbed.Ping(from.NS, to.Addr.String(), 1); err != nil {
			return fmt.Errorf("ping %v -> %v: %w\n%s", from.Addr, to.Addr, err, out)
		}
		if w = countWire(dump.file, c.Hosts[on-1].Addr, from, to); w.tunneled+w.plain < 6 {
			return fmt.Errorf("tcpdump caught %d echo packets so far, want 6", w.tunneled+w.plain)
		}
		return nil
	})
	dump.stop()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range w.bad {
		t.Error(bad)
	}
	switch {
	case tunnel && w.plain > 0:
		t.Errorf("%v -> %v: %d IPIP packets and %d plain pod packets on host %d's underlay, want IPIP only", from.Addr, to.Addr, w.tunneled, w.plain, on)
	case !tunnel && w.tunneled > 0:
		t.Errorf("%v -> %v: %d IPIP packets and %d plain pod packets on host %d's underlay, want plain only", from.Addr, to.Addr, w.tunneled, w.plain, on)
	}
}

// wireCount is what checkIPIPWire's capture holds: the echoes between
// the pods, in IPIP or plain, and what is wrong with an IPIP one.
type wireCount struct {
	tunneled, plain int
	bad             []string
}

// countWire reads the capture; the outer TTL is compared with the inner
// one on the packets host (the capturing one) sent: a router on the way
// lowers the outer TTL of the others.
func countWire(file string, host netip.Addr, from, to *testbed.Pod) (w wireCount) {
	f, err := os.Open(file)
	if err != nil {
		return w
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return w
	}
	pods := map[string]bool{from.Addr.String(): true, to.Addr.String(): true}
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			return w
		}
		var ips []*layers.IPv4
		for _, l := range gopacket.NewPacket(data, r.LinkType(), gopacket.Default).Layers() {
			if ip, ok := l.(*layers.IPv4); ok {
				ips = append(ips, ip)
			}
		}
		if len(ips) == 0 {
			continue
		}
		outer := ips[0]
		if outer.Protocol != layers.IPProtocolIPv4 {
			if pods[outer.SrcIP.String()] && pods[outer.DstIP.String()] {
				w.plain++
			}
			continue
		}
		if len(ips) < 2 || !pods[ips[1].SrcIP.String()] || !pods[ips[1].DstIP.String()] {
			continue
		}
		inner := ips[1]
		w.tunneled++
		sent := outer.SrcIP.Equal(host.AsSlice())
		if outer.IHL != 5 || int(outer.Length) != 20+int(inner.Length) || (sent && outer.TTL != inner.TTL) ||
			outer.Flags&layers.IPv4DontFragment != inner.Flags&layers.IPv4DontFragment || outer.TOS&^3 != 0 {
			w.bad = append(w.bad, fmt.Sprintf("outer header %v > %v IHL %d length %d TTL %d flags %v TOS %#x for inner length %d TTL %d flags %v: "+
				"want the kernel ipip device's (20 bytes, TTL and DF inherited, DSCP 0)",
				outer.SrcIP, outer.DstIP, outer.IHL, outer.Length, outer.TTL, outer.Flags, outer.TOS, inner.Length, inner.TTL, inner.Flags))
		}
	}
}

// checkKernelStylePeer plays a peer whose kernel does the IPIP, as
// flanneld's flannel.ipip: the switch namespace, at 198.51.100.254, with a
// lease 198.18.250.0/24 of type ipip. It sends an echo request from
// 198.18.250.5 to a pod of host 1 in an outer header built as the kernel
// builds it (an identification of its own, TTL and DF inherited), and
// reads the answer: protocol 4 from host 1, nothing between the outer
// header and the inner packet, the header's TTL and DF the inner's, the
// inner TTL lowered only by host 1's forwarding.
func checkKernelStylePeer(t *testing.T, c *testbed.Cluster, pod *testbed.Pod) {
	const peerSubnet, peerPod = "198.18.250.0/24", "198.18.250.5"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	grant, err := c.Client.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	key := testbed.EtcdPrefix + "/subnets/198.18.250.0-24"
	etcdPut(t, c, key, fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"ipip"}`, routerAddr), clientv3.WithLease(grant.ID))
	defer c.Client.Delete(context.Background(), key) //nolint:errcheck // the bed goes anyway
	var fd int
	if err := c.Switch.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_IPIP); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: routerAddr.As4()})
	}); err != nil {
		t.Fatalf("the kernel-style peer's socket: %v (lease %s)", err, peerSubnet)
	}
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1})
	host1 := c.Hosts[0].Addr
	deadline := time.Now().Add(30 * time.Second)
	for seq := uint16(1); ; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("no echo reply from %v through host 1's IPIP in 30 s", pod.Addr)
		}
		echo := kernelIPIP(t, routerAddr, host1, netip.MustParseAddr(peerPod), pod.Addr, seq)
		if err := unix.Sendto(fd, echo, 0, &unix.SockaddrInet4{Addr: host1.As4()}); err != nil {
			t.Fatal(err)
		}
		reply, ok := readIPIPReply(fd, host1, seq)
		if !ok {
			continue // host 1 has not learnt the lease yet
		}
		outer, inner := reply[:20], reply[20:]
		innerLen := int(binary.BigEndian.Uint16(inner[2:]))
		if len(reply) != 20+innerLen || outer[0] != 0x45 || outer[8] != inner[8] || outer[6]&0x40 != inner[6]&0x40 || outer[1]&^3 != 0 {
			t.Errorf("reply outer header % x for inner % x (%d bytes on the wire): want the kernel ipip device's", outer, inner[:20], len(reply))
		}
		if inner[8] != 63 {
			t.Errorf("the echo reply's TTL %d, want 63 (the pod's 64, forwarded once by host 1; the tunnel no hop)", inner[8])
		}
		t.Logf("kernel-style peer: echo %d answered through IPIP, outer % x", seq, outer)
		return
	}
}

// kernelIPIP is an ICMP echo request from src to dst in IPIP from outerSrc
// to outerDst, the outer header as the kernel's ipip device with ttl
// inherit and nopmtudisc writes it: its own identification, TTL and DF
// of the inner packet, tos 0.
func kernelIPIP(t *testing.T, outerSrc, outerDst, src, dst netip.Addr, seq uint16) []byte {
	t.Helper()
	inner := &layers.IPv4{Version: 4, TTL: 63, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolICMPv4,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: 0x4242}
	outer := &layers.IPv4{Version: 4, TTL: inner.TTL, Flags: inner.Flags, Protocol: layers.IPProtocolIPv4,
		SrcIP: outerSrc.AsSlice(), DstIP: outerDst.AsSlice(), Id: 0x1e57 + seq}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x7e57, Seq: seq}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, outer, inner, icmp, gopacket.Payload([]byte("kernel-style peer"))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readIPIPReply reads protocol-4 packets until one from host carries the
// echo reply to seq (false after the socket's timeout).
func readIPIPReply(fd int, host netip.Addr, seq uint16) ([]byte, bool) {
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		p := buf[:n]
		if n < 48 || !bytes.Equal(p[12:16], host.AsSlice()) || p[20+9] != unix.IPPROTO_ICMP {
			continue
		}
		icmp := p[40:]
		if icmp[0] == 0 && binary.BigEndian.Uint16(icmp[6:]) == seq {
			return append([]byte(nil), p...), true
		}
	}
}
