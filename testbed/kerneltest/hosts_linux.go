package kerneltest

import (
	"fmt"
	"net/netip"
	"testing"
)

// Host is a namespace "node" with one "pod" namespace behind its cni0
// bridge, as the flannel CNI plugin would set it up.
type Host struct {
	*Namespace
	Pod    *Namespace
	Ext    string       // the underlay link, "ext0"
	Addr   netip.Prefix // underlay address, 192.0.2.<i>/24
	Subnet netip.Prefix // the host's lease, 198.18.<i>.0/24
	PodIP  netip.Addr   // 198.18.<i>.2

	// The IPv6 half, set by DualStack.
	Addr6   netip.Prefix // 2001:db8:0:1::<i>/64
	Subnet6 netip.Prefix // 2001:db8:100:<i>::/64
	PodIP6  netip.Addr   // 2001:db8:100:<i>::2
}

// TwoHosts builds two hosts joined by a veth underlay (192.0.2.1 and
// 192.0.2.2), each forwarding, each with a pod at 198.18.<i>.2 whose
// default route is the bridge address 198.18.<i>.1. Everything is
// removed in t.Cleanup.
func TwoHosts(t testing.TB) (*Host, *Host) {
	t.Helper()
	hosts := make([]*Host, 2)
	for i := range hosts {
		n := i + 1
		hosts[i] = &Host{
			Namespace: NewNamespace(t, "host"),
			Pod:       NewNamespace(t, "pod"),
			Ext:       "ext0",
			Addr:      netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/24", n)),
			Subnet:    netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", n)),
			PodIP:     netip.MustParseAddr(fmt.Sprintf("198.18.%d.2", n)),
		}
	}
	a, b := hosts[0], hosts[1]
	Veth(t, a.Namespace, a.Ext, a.Addr.String(), b.Namespace, b.Ext, b.Addr.String())
	for i, h := range hosts {
		gw := fmt.Sprintf("198.18.%d.1", i+1)
		h.IP(t, "link", "add", "cni0", "type", "bridge")
		h.IP(t, "addr", "add", gw+"/24", "dev", "cni0")
		h.IP(t, "link", "set", "cni0", "up")
		Veth(t, h.Namespace, "vethpod", "", h.Pod, "eth0", h.PodIP.String()+"/24")
		h.IP(t, "link", "set", "vethpod", "master", "cni0")
		h.Pod.IP(t, "route", "add", "default", "via", gw)
		if out, err := h.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("enable forwarding in %s: %v: %s", h.Name, err, out)
		}
	}
	return a, b
}

// Ping pings dst from the pod of h: 3 echo requests, 1 s timeout each.
func (h *Host) Ping(t testing.TB, dst netip.Addr) (string, error) {
	t.Helper()
	return h.Pod.Exec(t, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst.String())
}
