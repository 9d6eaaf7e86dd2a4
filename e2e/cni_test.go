package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// TestCNIChain runs etcd-mode clusters whose pods are made as kubelet
// makes them: CNI ADD through flannel's 10-flannel.conflist (the flannel
// plugin reading flannelu's subnet.env and delegating to bridge with
// host-local IPAM, then portmap), and removed with CNI DEL, for each
// backend. vxlan and host-gw run flannelu with --ip-masq, as the
// kube-flannel DaemonSet runs flanneld; udp runs without it (flanneld's
// default), so the bridge plugin masquerades instead.
func TestCNIChain(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	for _, tc := range []struct {
		backend string
		args    []string
	}{
		{"udp", nil},
		{"vxlan", []string{"--ip-masq"}},
		{"host-gw", []string{"--ip-masq"}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			config := fmt.Sprintf(`{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0","Backend":{"Type":%q}}`, tc.backend)
			c := newCluster(t, "e2e-cni-"+tc.backend, 3, config)
			for i := 1; i <= 3; i++ {
				if err := startNode(t, c, i, tc.args...).AddCNIPods(2); err != nil {
					t.Fatal(err)
				}
			}
			waitPing(t, c.Hosts[0].Pods[0], c.Hosts[2].Pods[1].Addr)
			t.Run("pods as the plugins made them from subnet.env", func(t *testing.T) { checkCNIPods(t, c) })
			t.Run("full mesh ping", func(t *testing.T) { fullMesh(t, allPods(c, 1, 2, 3)) })
			t.Run("source address between pods", func(t *testing.T) { checkCNISource(t, c) })
			t.Run("CNI DEL releases the pod", func(t *testing.T) { checkCNIDel(t, c) })
			t.Run("hostPort through portmap", func(t *testing.T) { checkHostPort(t, c) })
		})
	}
}

// ipLink is the part of `ip -j link` the checks read.
type ipLink struct {
	Flags  []string `json:"flags"`
	MTU    int      `json:"mtu"`
	Master string   `json:"master"`
}

func link(t *testing.T, ns testbed.NS, name string) ipLink {
	t.Helper()
	var links []ipLink
	if err := ipJSON(ns, &links, "ip", "-j", "link", "show", "dev", name); err != nil || len(links) != 1 {
		t.Fatalf("link %s in %s: %v %v", name, ns.Name, err, links)
	}
	return links[0]
}

// checkCNIPods checks, on every host, what a user would: each pod's
// address is in the host's FLANNEL_SUBNET and held by host-local, its
// default route goes via the bridge (cni0 holds FLANNEL_SUBNET's
// address), eth0 and the host veth have FLANNEL_MTU, lo is up (the
// loopback plugin), and the bridge plugin masquerades the pod exactly when
// flannelu does not (FLANNEL_IPMASQ=false).
func checkCNIPods(t *testing.T, c *testbed.Cluster) {
	for i := 1; i <= 3; i++ {
		n, h := c.Nodes[i], c.Hosts[i-1]
		gw, subnet := bridgeAddr(n), n.Env.Subnet.Masked()
		var addrs []struct {
			AddrInfo []struct {
				Local     string `json:"local"`
				Prefixlen int    `json:"prefixlen"`
			} `json:"addr_info"`
		}
		if err := ipJSON(h, &addrs, "ip", "-j", "-4", "addr", "show", "dev", "cni0"); err != nil || len(addrs) != 1 {
			t.Fatalf("cni0 on %s: %v %v", h.Name, err, addrs)
		}
		if a := addrs[0].AddrInfo; len(a) != 1 || a[0].Local != gw.String() || a[0].Prefixlen != subnet.Bits() {
			t.Errorf("cni0 on %s has %+v, want FLANNEL_SUBNET %s", h.Name, a, n.Env.Subnet)
		}
		var pods []netip.Addr
		for _, pod := range h.Pods {
			pods = append(pods, pod.Addr)
			checkCNIPod(t, n, pod)
		}
		held, err := h.CNI.Reserved()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(held, netip.Addr.Compare)
		slices.SortFunc(pods, netip.Addr.Compare)
		if !slices.Equal(held, pods) {
			t.Errorf("host-local on %s holds %v, want the pods' %v", h.Name, held, pods)
		}
	}
}

// bridgeAddr is the address FLANNEL_SUBNET names (198.18.x.1/24), the
// subnet's first: host-local's gateway, which the bridge plugin puts on cni0.
func bridgeAddr(n *testbed.Node) netip.Addr {
	return n.Env.Subnet.Masked().Addr().Next()
}

func checkCNIPod(t *testing.T, n *testbed.Node, pod *testbed.Pod) {
	t.Helper()
	gw, subnet := bridgeAddr(n), n.Env.Subnet.Masked()
	if !subnet.Contains(pod.Addr) || pod.Addr == gw {
		t.Errorf("pod %s: address %s is not a pod address of FLANNEL_SUBNET %s", pod.Name, pod.Addr, n.Env.Subnet)
	}
	var routes []struct{ Dst, Gateway, Dev string }
	if err := ipJSON(pod.NS, &routes, "ip", "-j", "-4", "route", "show", "default"); err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Gateway != gw.String() || routes[0].Dev != "eth0" {
		t.Errorf("pod %s default route %+v, want via %s (cni0) dev eth0", pod.Name, routes, gw)
	}
	if mtu := link(t, pod.NS, "eth0").MTU; mtu != n.Env.MTU {
		t.Errorf("pod %s eth0 MTU %d, want FLANNEL_MTU %d", pod.Name, mtu, n.Env.MTU)
	}
	if lo := link(t, pod.NS, "lo"); !slices.Contains(lo.Flags, "UP") {
		t.Errorf("pod %s lo is down (%v): the loopback plugin did not run", pod.Name, lo.Flags)
	}
	if veth := link(t, n.Host.NS, pod.Veth); veth.Master != "cni0" || veth.MTU != n.Env.MTU {
		t.Errorf("host veth %s of pod %s: master %q MTU %d, want cni0 and %d", pod.Veth, pod.Name, veth.Master, veth.MTU, n.Env.MTU)
	}
	if masq := strings.Contains(natRules(t, n.Host), "-s "+pod.Addr.String()+"/32 "); masq == n.Env.IPMasq {
		t.Errorf("pod %s on %s: bridge plugin masquerade rule %v with FLANNEL_IPMASQ=%v", pod.Addr, n.Host.Name, masq, n.Env.IPMasq)
	}
}

// checkCNISource sends from a pod on host 1 to a pod on host 3. With
// FLANNEL_IPMASQ=true flannelu leaves pod-to-pod traffic alone and the
// receiver sees the sending pod; with false the bridge plugin has
// masqueraded everything leaving the pod's subnet to an address of the
// sending host, as it does on a flanneld node without --ip-masq.
func checkCNISource(t *testing.T, c *testbed.Cluster) {
	from, to := c.Hosts[0].Pods[0], c.Hosts[2].Pods[0]
	src := sourceSeen(t, from, to.NS, to.Addr, 7801)
	if c.Nodes[1].Env.IPMasq {
		if src != from.Addr {
			t.Errorf("pod %s saw source %s, want the sending pod's %s", to.Addr, src, from.Addr)
		}
		return
	}
	if own := c.Hosts[0].Exec(t, "ip", "-4", "-o", "addr", "show"); src == from.Addr || !strings.Contains(own, " "+src.String()+"/") {
		t.Errorf("pod %s saw source %s, want an address of host 1 (the bridge plugin's masquerade):\n%s", to.Addr, src, own)
	}
}

func natRules(t *testing.T, h *testbed.Host) string {
	t.Helper()
	return h.Exec(t, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING")
}

// checkCNIDel removes a pod with CNI DEL and checks that everything the
// ADD made is gone (its address in host-local's store, its host veth, its
// masquerade rule, its namespace), that the host's other pod is still
// reached, and that a new pod on the host is reached from another host.
func checkCNIDel(t *testing.T, c *testbed.Cluster) {
	h := c.Hosts[1]
	pod, other := h.Pods[0], h.Pods[1]
	if err := h.CNI.DelPod(pod); err != nil {
		t.Fatal(err)
	}
	held, err := h.CNI.Reserved()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(held, pod.Addr) {
		t.Errorf("host-local still holds %s after DEL: %v", pod.Addr, held)
	}
	if out, err := h.Run("ip", "link", "show", "dev", pod.Veth); err == nil {
		t.Errorf("host veth %s still there after DEL: %s", pod.Veth, out)
	}
	if rules := natRules(t, h); strings.Contains(rules, "-s "+pod.Addr.String()+"/32 ") {
		t.Errorf("masquerade rule for %s still there after DEL:\n%s", pod.Addr, rules)
	}
	if _, err := os.Stat(pod.Path()); err == nil {
		t.Errorf("pod namespace %s still there after DEL", pod.Name)
	}
	if slices.Contains(h.Pods, pod) || len(h.Pods) != 1 {
		t.Errorf("host %s lists pods %v after DEL", h.Name, h.Pods)
	}
	from := c.Hosts[0].Pods[0]
	if out, err := testbed.Ping(from.NS, other.Addr.String(), 3); err != nil {
		t.Errorf("the other pod %s on %s unreachable after DEL: %v\n%s", other.Addr, h.Name, err, out)
	}
	added, err := h.CNI.AddPod()
	if err != nil {
		t.Fatal(err)
	}
	checkCNIPod(t, c.Nodes[2], added)
	waitPing(t, c.Hosts[2].Pods[0], added.Addr)
}

// checkHostPort creates a pod on host 3 with a hostPort, as kubelet does
// for a pod spec's hostPort: the conflist's portmap plugin maps host 3's
// port to the pod, so host 1 reaches the pod at 192.0.2.3:30080; after
// DEL the mapping is gone.
func checkHostPort(t *testing.T, c *testbed.Cluster) {
	h := c.Hosts[2]
	pod, err := h.CNI.AddPod(testbed.PortMapping{HostPort: 30080, ContainerPort: 8080, Protocol: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := pod.Do(func() (err error) { ln, err = net.Listen("tcp", ":8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "pod %s", pod.Addr)
			conn.Close()
		}
	}()
	hostPort := testbed.ListenAddr(h.Addr, 30080)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Hosts[0].Dial(ctx, hostPort)
	if err != nil {
		t.Fatalf("host 1 -> %s (hostPort of pod %s): %v", hostPort, pod.Addr, err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(conn)
	conn.Close()
	if want := "pod " + pod.Addr.String(); err != nil || string(got) != want {
		t.Errorf("host 1 -> %s read %q (%v), want %q", hostPort, got, err, want)
	}
	if err := h.CNI.DelPod(pod); err != nil {
		t.Fatal(err)
	}
	if rules := h.Exec(t, "iptables", "-w", "-t", "nat", "-S"); strings.Contains(rules, "30080") {
		t.Errorf("portmap's rules for hostPort 30080 still there after DEL:\n%s", rules)
	}
}
