package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// TestIPMasq checks flanneld's --ip-masq rules on the wire. Host 1 runs
// flannelu with --ip-masq, host 3 without, and host 2 runs none: it is a
// machine outside the overlay. (A flannelu host would also drop pod
// traffic that is not masqueraded: the testbed's hosts filter by reverse
// path, and a flannelu host routes the overlay through its flannel device,
// not eth0.)
func TestIPMasq(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-masq", 3, udpConfig)
	startNode(t, c, 1, "--ip-masq", "--iptables-resync", "1")
	startNode(t, c, 3)
	for _, i := range []int{1, 3} {
		if err := c.Nodes[i].AddPods(1); err != nil {
			t.Fatal(err)
		}
	}
	h1, outside := c.Hosts[0], c.Hosts[1]
	// The rules go in just after subnet.env; a datagram sent before them
	// would pin its flow to "no NAT" in conntrack.
	if err := testbed.Eventually(30*time.Second, func() error { return masqChainComplete(h1) }); err != nil {
		t.Fatal(err)
	}
	t.Run("pod to outside is masqueraded", func(t *testing.T) {
		if src := sourceSeen(t, h1.Pods[0], outside.NS, outside.Addr, 7701); src != h1.Addr {
			t.Fatalf("the outside host saw source %v, want host 1's %v", src, h1.Addr)
		}
	})
	t.Run("without --ip-masq the pod's address goes out", func(t *testing.T) {
		pod := c.Hosts[2].Pods[0]
		if src := sourceSeen(t, pod, outside.NS, outside.Addr, 7702); src != pod.Addr {
			t.Fatalf("the outside host saw source %v, want the pod's %v", src, pod.Addr)
		}
		if out, err := c.Hosts[2].Run("iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG"); err == nil {
			t.Fatalf("host 3 has a masquerade chain without --ip-masq:\n%s", out)
		}
	})
	t.Run("pod to pod keeps the pod's address", func(t *testing.T) {
		from, to := h1.Pods[0], c.Hosts[2].Pods[0]
		waitPing(t, from, to.Addr)
		if src := sourceSeen(t, from, to.NS, to.Addr, 7703); src != from.Addr {
			t.Fatalf("the pod on host 3 saw source %v, want the sending pod's %v", src, from.Addr)
		}
	})
	t.Run("no resync failures counted", func(t *testing.T) {
		text, err := c.Nodes[1].Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "\nflannelu_iptables_resync_failures_total 0\n") {
			t.Fatalf("/metrics has no flannelu_iptables_resync_failures_total 0:\n%s", text)
		}
	})
}

// masqChainComplete reports whether flannelu on h has put in all of
// flanneld's masquerade rules.
func masqChainComplete(h *testbed.Host) error {
	out, err := h.Run("iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG")
	if err != nil {
		return err
	}
	if n := strings.Count(out, "-A FLANNEL-POSTRTG "); n != 6 {
		return fmt.Errorf("%d rules in FLANNEL-POSTRTG on %s, want 6:\n%s", n, h.Name, out)
	}
	return nil
}

// sourceSeen sends UDP datagrams from pod to addr:port, where a listener in
// ns receives them, and returns the source address the first one arrived
// with. Each try uses a new socket (a new flow for conntrack).
func sourceSeen(t *testing.T, pod *testbed.Pod, ns testbed.NS, addr netip.Addr, port int) netip.Addr {
	t.Helper()
	dst := &net.UDPAddr{IP: addr.AsSlice(), Port: port}
	var ln *net.UDPConn
	if err := ns.Do(func() (err error) {
		ln, err = net.ListenUDP("udp4", dst)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var src netip.Addr
	err := testbed.Eventually(30*time.Second, func() error {
		if err := pod.Do(func() error {
			conn, err := net.DialUDP("udp4", nil, dst)
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = conn.Write([]byte("masq?"))
			return err
		}); err != nil {
			return err
		}
		ln.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, from, err := ln.ReadFromUDPAddrPort(make([]byte, 64))
		src = from.Addr().Unmap()
		return err
	})
	if err != nil {
		t.Fatalf("nothing from %s reached %v:%d: %v", pod.Addr, addr, port, err)
	}
	return src
}
