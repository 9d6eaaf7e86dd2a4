package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// wgPSK is the clusters' pre-shared key (`wg genpsk`).
const wgPSK = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="

// wgConfig is a dual-stack wireguard network of the mode, with wgPSK.
func wgConfig(mode string) string {
	return strings.Replace(dualStack.config("wireguard"), `"Type":"wireguard"`,
		`"Type":"wireguard","PSK":"`+wgPSK+`","Mode":"`+mode+`"`, 1)
}

// wgBed is a bed whose hosts each have a /run/wireguard of their own, as
// separate machines do: wg(8) run in a host finds that host's devices.
func wgBed(name string, hosts int) testbed.Options {
	return testbed.Options{Name: name, Hosts: hosts, IPv6: true, PrivateDirs: []string{"/run/wireguard"}}
}

// TestWireguard runs the wireguard backend (WireGuard in flannelu's
// process: this kernel has none) on three dual-stack hosts with etcd, as
// flanneld's layout in separate mode and then in auto mode, next to a
// fourth host that runs no flannelu but standalone wireguard-go set up by
// hand from the leases exactly as flanneld's kernel backend would set up
// its device; then on three hosts with the Kubernetes store.
func TestWireguard(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	t.Run("etcd", func(t *testing.T) {
		t.Parallel()
		w := &wgCluster{c: newClusterOf(t, wgBed("e2e-wg", 4), wgConfig("separate"))}
		w.start(t, 1, 2, 3)
		t.Run("leases, key files and subnet.env as flanneld writes them", func(t *testing.T) { w.checkLeases(t, 51821) })
		t.Run("devices and peers on host 1", func(t *testing.T) { w.checkDevices(t, "separate") })
		t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, w.pods(1, 2, 3)) })
		t.Run("32 MB TCP byte for byte", w.checkTransfer)
		t.Run("underlay carries WireGuard only", w.checkWire)
		t.Run("standalone wireguard-go peer set up as flanneld's", w.checkStandalone)
		t.Run("removed lease removes the peer", w.checkPeerRemoved)
		t.Run("restart keeps the key; gap under ping", w.checkRestart)
		t.Run("Mode auto", func(t *testing.T) {
			w.setConfig(t, wgConfig("auto"))
			w.checkLeases(t, 51820)
			w.checkDevices(t, "auto")
			fullMesh(t, w.pods(1, 2, 3))
			w.transfer(t, 2, 3)
		})
	})
	t.Run("kube", func(t *testing.T) {
		t.Parallel()
		c := newClusterWith(t, testbed.ClusterOptions{Bed: wgBed("e2e-kw", 3), Config: dualStack.kubeConfig("wireguard"), Kube: true})
		w := &wgCluster{c: c}
		w.start(t, 1, 2, 3)
		t.Run("annotations as flanneld writes them", w.checkAnnotations)
		t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, w.pods(1, 2, 3)) })
		t.Run("32 MB TCP byte for byte", w.checkTransfer)
	})
}

type wgCluster struct {
	c *testbed.Cluster
	// standalone is host 4's lease key and standaloneKey its public key,
	// once checkStandalone made them.
	standalone, standaloneKey string
}

// start runs flannelu on the hosts, one pod each through the CNI chain.
func (w *wgCluster) start(t *testing.T, hosts ...int) {
	t.Helper()
	for _, i := range hosts {
		n, err := w.c.JoinNode(i)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.AddCNIPods(1); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, w.c.Hosts[0].Pods[0], w.c.Hosts[hosts[len(hosts)-1]-1].Pods[0].Addr)
}

// pods lists the hosts' pods once per family.
func (w *wgCluster) pods(hosts ...int) []*testbed.Pod {
	pods := allPods(w.c, hosts...)
	for _, p := range allPods(w.c, hosts...) {
		pods = append(pods, v6Pod(p))
	}
	return pods
}

// keyFile is host i's key file: wgkey beside its subnet.env.
func (w *wgCluster) keyFile(i int) string {
	return filepath.Join(filepath.Dir(w.c.Nodes[i].SubnetFile), "wgkey")
}

// publicKey reads host i's key file, checking flanneld's mode 0400.
func (w *wgCluster) publicKey(t *testing.T, i int) string {
	t.Helper()
	fi, err := os.Stat(w.keyFile(i))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o400 {
		t.Errorf("%s: mode %v, want 0400", w.keyFile(i), fi.Mode().Perm())
	}
	b, _ := os.ReadFile(w.keyFile(i))
	k, err := wgtypes.ParseKey(string(b))
	if err != nil {
		t.Fatalf("%s: %v", w.keyFile(i), err)
	}
	return k.PublicKey().String()
}

// checkLeases reads each host's lease: flanneld's value with the key of
// the host's key file, BackendV6Data naming port6, and subnet.env's MTU
// 1500 - 80.
func (w *wgCluster) checkLeases(t *testing.T, port6 int) {
	for i := 1; i <= 3; i++ {
		n, h := w.c.Nodes[i], w.c.Hosts[i-1]
		key := w.publicKey(t, i)
		want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820},`+
			`"BackendV6Data":{"PublicKey":"%s","Port":%d}}`, h.Addr, h.Addr6, key, key, port6)
		if got := w.leaseValue(t, n); got != want {
			t.Errorf("host %d lease\n %s\nwant\n %s", i, got, want)
		}
		if n.Env.MTU != 1420 {
			t.Errorf("host %d FLANNEL_MTU %d, want 1420", i, n.Env.MTU)
		}
	}
}

func (w *wgCluster) leaseValue(t *testing.T, n *testbed.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := testbed.EtcdPrefix + "/subnets/" + subnet.MakeSubnetKey(n.Env.Subnet.Masked(), n.Env.IPv6Subnet.Masked())
	resp, err := w.c.Client.Get(ctx, key)
	if err != nil || resp.Count != 1 {
		t.Fatalf("lease %s: %v", key, err)
	}
	return string(resp.Kvs[0].Value)
}

// wgPeer is one peer line of `wg show <dev> dump`.
type wgPeer struct{ key, psk, endpoint, allowed string }

// wgShow runs `wg show <dev> dump` on a host: the listen port and the peers.
func wgShow(h *testbed.Host, dev string) (port string, peers map[string]wgPeer, err error) {
	out, err := h.Run("wg", "show", dev, "dump")
	if err != nil {
		return "", nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Split(lines[0], "\t"); len(f) == 4 {
		port = f[2]
	}
	peers = map[string]wgPeer{}
	for _, l := range lines[1:] {
		if f := strings.Split(l, "\t"); len(f) == 8 {
			peers[f[0]] = wgPeer{f[0], f[1], f[2], f[3]}
		}
	}
	return port, peers, nil
}

// checkDevices checks host 1 against flanneld's layout for the mode: the
// devices (MTU 1420), their addresses and routes, and through wg(8) each
// peer's key, PSK, endpoint (its lease's address and port) and allowed IPs
// (its subnets).
func (w *wgCluster) checkDevices(t *testing.T, mode string) {
	h := w.c.Hosts[0]
	own := w.c.Nodes[1].Env
	type devWant struct {
		name, port string
		addrs      []string
		routes     []string
	}
	devs := []devWant{
		{"flannel-wg", "51820", []string{own.Subnet.Masked().Addr().String() + "/32"}, []string{"198.18.0.0/16"}},
		{"flannel-wg-v6", "51821", []string{own.IPv6Subnet.Masked().Addr().String() + "/128"}, []string{overlay6.String()}},
	}
	if mode != "separate" {
		devs = []devWant{{"flannel-wg", "51820", append(devs[0].addrs, devs[1].addrs...), []string{"198.18.0.0/16", overlay6.String()}}}
		if _, err := h.Run("ip", "link", "show", "flannel-wg-v6"); err == nil {
			t.Error("flannel-wg-v6 still there in a one-device mode")
		}
	}
	for di, d := range devs {
		var links []struct {
			MTU      int `json:"mtu"`
			AddrInfo []struct {
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
				Scope     string `json:"scope"`
			} `json:"addr_info"`
		}
		if err := ipJSON(h, &links, "ip", "-j", "addr", "show", "dev", d.name); err != nil || len(links) != 1 {
			t.Fatalf("%s: %v", d.name, err)
		}
		var addrs []string
		for _, a := range links[0].AddrInfo {
			if a.Scope != "link" {
				addrs = append(addrs, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			}
		}
		if links[0].MTU != 1420 || !slices.Equal(addrs, d.addrs) {
			t.Errorf("%s: MTU %d, addresses %v; want 1420, %v", d.name, links[0].MTU, addrs, d.addrs)
		}
		for _, r := range d.routes {
			fam := map[bool]string{true: "-6", false: "-4"}[strings.Contains(r, ":")]
			if out, _ := h.Run("ip", fam, "route", "show", "exact", r); !strings.HasPrefix(out, r+" dev "+d.name) {
				t.Errorf("route %s: %q, want it through %s", r, out, d.name)
			}
		}
		port, peers, err := wgShow(h, d.name)
		if err != nil {
			t.Fatal(err)
		}
		if port != d.port {
			t.Errorf("%s listens on %s, want %s", d.name, port, d.port)
		}
		if len(peers) != 2 {
			t.Errorf("%s has %d peers, want 2: %v", d.name, len(peers), peers)
		}
		for i := 2; i <= 3; i++ {
			env, ph := w.c.Nodes[i].Env, w.c.Hosts[i-1]
			want := wgPeer{key: w.publicKey(t, i), psk: wgPSK}
			switch {
			case mode != "separate":
				want.endpoint, want.allowed = ph.Addr.String()+":51820", env.Subnet.String()+","+env.IPv6Subnet.String()
			case di == 0:
				want.endpoint, want.allowed = ph.Addr.String()+":51820", env.Subnet.String()
			default:
				want.endpoint, want.allowed = "["+ph.Addr6.String()+"]:51821", env.IPv6Subnet.String()
			}
			if got := peers[want.key]; got != want {
				t.Errorf("%s peer for host %d: %+v, want %+v", d.name, i, got, want)
			}
		}
	}
}

// checkTransfer sends 32 MB from host 1's pod to host 2's over each family.
func (w *wgCluster) checkTransfer(t *testing.T) { w.transfer(t, 1, 2) }

// transfer sends 32 MB between two hosts' pods over each family (once
// per pair: the receiver's log is per pod and address).
func (w *wgCluster) transfer(t *testing.T, a, b int) {
	from, to := w.c.Hosts[a-1].Pods[0], w.c.Hosts[b-1].Pods[0]
	transfer(t, w.c.Bed, from, to, 32<<20)
	transfer(t, w.c.Bed, v6Pod(from), v6Pod(to), 32<<20)
}

// wgPattern fills the pings' payload: it must never show on the underlay.
const wgPattern = "feedc0dedeadbeef"

// checkWire captures host 2's underlay while host 1's pod pings host 2's
// over both families: every packet (but ARP, neighbour discovery and
// etcd's) is UDP between the WireGuard ports (51820 for IPv4, 51821 for IPv6 in separate mode), none
// is an inner packet, and the pings' payload is nowhere in plain text.
func (w *wgCluster) checkWire(t *testing.T) {
	h1, h2 := w.c.Hosts[0], w.c.Hosts[1]
	file := filepath.Join(w.c.Dir, "wg-wire.pcap")
	// Everything on host 2's underlay but ARP and its etcd client's
	// connection to host 1: an inner packet that leaked in plain text
	// (pod addresses) would be caught too.
	p, err := w.c.Start(h2.NS, "tcpdump-wg-wire", "tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode", "-w", file,
		"not arp and not tcp port 2379")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitLog(tcpdumpListening, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	from, to := h1.Pods[0], h2.Pods[0]
	for _, dst := range []netip.Addr{to.Addr, to.Addr6} {
		if out, err := from.Run("ping", "-n", "-c", "20", "-i", "0.01", "-w", "10", "-p", wgPattern, dst.String()); err != nil {
			t.Fatalf("ping %s: %v %s", dst, err, out)
		}
	}
	// tcpdump writes what it captured a moment later on a loaded
	// machine: stopped at once, its file lacked 5 of the last 40.
	testbed.Eventually(30*time.Second, func() error { //nolint:errcheck // the check below says what is missing
		if wg, _ := w.readWire(t, file, false); wg[51820] < 40 || wg[51821] < 40 {
			return fmt.Errorf("%v", wg)
		}
		return nil
	})
	p.Signal(syscall.SIGINT)
	p.Wait(10 * time.Second) //nolint:errcheck // tcpdump's exit status says nothing here
	wg, total := w.readWire(t, file, true)
	// 20 echo requests and 20 replies per family, all in WireGuard data messages.
	if wg[51820] < 40 || wg[51821] < 40 {
		t.Errorf("WireGuard data messages on port 51820: %d, on 51821: %d of %d packets; want at least 40 each (%s)", wg[51820], wg[51821], total, file)
	}
}

// readWire counts the WireGuard data messages in a capture by port, and
// the packets; check reports each packet that is no WireGuard datagram
// or shows the pings' payload.
func (w *wgCluster) readWire(t *testing.T, file string, check bool) (wg map[uint16]int, total int) {
	wg = map[uint16]int{}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		if !check {
			return wg, 0 // no header written yet
		}
		t.Fatal(err)
	}
	pattern := []byte{0xfe, 0xed, 0xc0, 0xde, 0xde, 0xad, 0xbe, 0xef}
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		total++
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		if pkt.Layer(layers.LayerTypeICMPv6) != nil && pkt.Layer(layers.LayerTypeUDP) == nil {
			continue // the underlay's own neighbour discovery
		}
		udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok || udp.SrcPort != udp.DstPort || (udp.DstPort != 51820 && udp.DstPort != 51821) {
			if check {
				t.Errorf("a packet between the hosts that is no WireGuard datagram: %v", pkt)
			}
			continue
		}
		if check && bytes.Contains(udp.Payload, pattern) {
			t.Errorf("the pings' payload shows in plain text on the underlay: %v", pkt)
		}
		if len(udp.Payload) > 0 && udp.Payload[0] == 4 { // WireGuard transport data
			wg[uint16(udp.DstPort)]++
		}
	}
	return wg, total
}

// checkStandalone gives host 4 what a node running flanneld's wireguard
// backend on a kernel with WireGuard would have: a lease in etcd (as
// flanneld writes it) and a device laid out as flanneld lays it out, here
// standalone wireguard-go configured with wg and ip from the flannelu
// hosts' leases (key file, ListenPort, PSK, each peer's endpoint and
// subnet as AllowedIPs). Its pod and the flannelu hosts' pods reach each
// other.
func (w *wgCluster) checkStandalone(t *testing.T) {
	h := w.c.Hosts[3]
	sn, sn6 := netip.MustParsePrefix("198.18.201.0/24"), netip.MustParsePrefix("2001:db8:100:c9::/64")
	dir := filepath.Join(w.c.Dir, h.Name)
	os.MkdirAll(dir, 0o755)
	keyFile, pskFile := filepath.Join(dir, "wgkey"), filepath.Join(dir, "psk")
	if err := testbed.GenWireGuardKey(keyFile); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(pskFile, []byte(wgPSK), 0o400)
	dev, err := w.c.StartWireGuardGo(h, testbed.WireGuardLayout{Dev: "flannel-wg", KeyFile: keyFile, Port: 51820, MTU: 1420,
		Addr: netip.PrefixFrom(sn.Addr(), 32), Network: overlay})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		env := w.c.Nodes[i].Env
		var l struct {
			PublicIP    string
			BackendData struct {
				PublicKey string
				Port      int
			}
		}
		if err := json.Unmarshal([]byte(w.leaseValue(t, w.c.Nodes[i])), &l); err != nil {
			t.Fatal(err)
		}
		ep := netip.AddrPortFrom(netip.MustParseAddr(l.PublicIP), uint16(l.BackendData.Port))
		if err := dev.SetPeer(l.BackendData.PublicKey, ep, []netip.Prefix{env.Subnet.Masked()}, pskFile); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.AddPods(1, netip.PrefixFrom(sn.Addr().Next(), 24), 1420); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf(`{"PublicKey":%q,"Port":51820}`, dev.PublicKey)
	value := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"wireguard","BackendData":%s,"BackendV6Data":%s}`,
		h.Addr, h.Addr6, data, strings.Replace(data, "51820", "51821", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	grant, err := w.c.Client.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	w.standalone = testbed.EtcdPrefix + "/subnets/" + subnet.MakeSubnetKey(sn, sn6)
	w.standaloneKey = dev.PublicKey
	if _, err := w.c.Client.Put(ctx, w.standalone, value, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	pods := append(allPods(w.c, 1, 2, 3), h.Pods[0])
	fullMesh(t, pods)
}

// checkPeerRemoved deletes host 4's lease: every flannelu host removes
// the peer by its key (wg show no longer lists it).
func (w *wgCluster) checkPeerRemoved(t *testing.T) {
	if w.standalone == "" {
		t.Skip("no standalone peer")
	}
	for i := 1; i <= 3; i++ {
		if _, peers, _ := wgShow(w.c.Hosts[i-1], "flannel-wg"); peers[w.standaloneKey] == (wgPeer{}) {
			t.Fatalf("host %d has no peer for host 4 before its lease goes", i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.c.Client.Delete(ctx, w.standalone); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		h := w.c.Hosts[i-1]
		if err := testbed.Eventually(eventDeadline, func() error {
			_, peers, err := wgShow(h, "flannel-wg")
			if err == nil && peers[w.standaloneKey] != (wgPeer{}) {
				err = fmt.Errorf("host %d still lists host 4's peer", i)
			}
			return err
		}); err != nil {
			t.Error(err)
		}
	}
}

// checkRestart restarts host 2's flannelu under a 100/s ping stream from
// host 1's pod to host 2's, the restarted host being the receiver: the
// key file and lease stay, the stream resumes, and the gap is reported.
// The restarted device starts without sessions while host 1 keeps
// sending on its old one; without the handshake the restarted device
// starts at once (userDevice.kick), host 1 would go on for 15 s
// (WireGuard's keepalive and rekey timeouts) before handshaking again.
func (w *wgCluster) checkRestart(t *testing.T) {
	n := w.c.Nodes[2]
	keyBefore, _ := os.ReadFile(w.keyFile(2))
	leaseBefore := w.leaseValue(t, n)
	ping := startPing(t, w.c, "ping-wg-restart", "-i", "0.01")
	stopped := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := w.c.StartNode(2); err != nil {
		t.Fatal(err)
	}
	started := time.Since(stopped)
	last := stopPing(t, ping, 100)
	lost := lostSeqs(ping, last)
	gap := time.Duration(len(lost)) * 10 * time.Millisecond
	t.Logf("restart of the receiving host under a 100/s ping: %d of %d lost (gap about %v); stop to subnet.env written again %v",
		len(lost), last, gap, started.Round(time.Millisecond))
	if gap > 10*time.Second {
		t.Errorf("the ping stream stopped for %v across the restart: the restarted host did not handshake at once", gap)
	}
	if keyAfter, _ := os.ReadFile(w.keyFile(2)); !bytes.Equal(keyAfter, keyBefore) {
		t.Error("the key file changed across the restart")
	}
	w.publicKey(t, 2) // still 0400
	if got := w.leaseValue(t, w.c.Nodes[2]); got != leaseBefore {
		t.Errorf("lease after the restart %s, before %s", got, leaseBefore)
	}
}

// setConfig writes a new network config and restarts every flannelu with it.
func (w *wgCluster) setConfig(t *testing.T, config string) {
	t.Helper()
	for i := 1; i <= 3; i++ {
		if err := w.c.Nodes[i].Stop(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.c.Client.Put(ctx, testbed.EtcdPrefix+"/config", config); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := w.c.StartNode(i); err != nil {
			t.Fatal(err)
		}
	}
}

// checkAnnotations reads each node: flanneld's wireguard annotations,
// the IPv4 and IPv6 backend data with the node's key and ports.
func (w *wgCluster) checkAnnotations(t *testing.T) {
	p := "flannel.alpha.coreos.com/"
	for i := 1; i <= 3; i++ {
		n, err := w.c.KubeNode(i)
		if err != nil {
			t.Fatal(err)
		}
		h, key := w.c.Hosts[i-1], w.publicKey(t, i)
		want := map[string]string{
			p + "backend-type":        "wireguard",
			p + "backend-data":        fmt.Sprintf(`{"PublicKey":"%s","Port":51820}`, key),
			p + "backend-v6-data":     fmt.Sprintf(`{"PublicKey":"%s","Port":51821}`, key),
			p + "public-ip":           h.Addr.String(),
			p + "public-ipv6":         h.Addr6.String(),
			p + "kube-subnet-manager": "true",
		}
		for k, v := range want {
			if got := n.Annotations[k]; got != v {
				t.Errorf("node %d %s = %q, want %q", i, k, got, v)
			}
		}
	}
}
